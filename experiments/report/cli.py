"""``python -m experiments.report <run dirs | sweep dirs | globs> --out reports/<name>``: see the package docstring."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

from experiments.report import browser, plots
from experiments.results import robustness
from experiments.results.papers import PAPER_CSV, PaperRow, load_papers, match_papers, paper_cell
from experiments.results.render import Figure, Section, Table, write
from experiments.results.runs import (
    REQUIRED_METRICS,
    Group,
    ReportError,
    Run,
    checkpoint_path,
    discover,
    fmt_value,
    group_runs,
    short_key,
    split_retests,
    sweep_summary,
)
from experiments.results.sections import PROVENANCE, RECHECKED, comparison_section, provenance, recheck
from experiments.results.stats import compare, fmt_mean_std, same_test_set

MAIN_METRICS = (("T2V R@1", "t2v_R1"), ("T2V R@5", "t2v_R5"), ("T2V R@10", "t2v_R10"), ("T2V MdR", "t2v_MdR"),
                ("T2V MnR", "t2v_MnR"), ("V2T R@1", "v2t_R1"), ("V2T R@5", "v2t_R5"), ("V2T R@10", "v2t_R10"),
                ("rsum", "rsum"))
SWEEP_METRICS = (("T2V R@1", "t2v_R1"), ("T2V R@5", "t2v_R5"), ("T2V R@10", "t2v_R10"), ("V2T R@1", "v2t_R1"),
                 ("rsum", "rsum"))
MAX_SWEEP_COLUMNS = 8
POSTPROCESSED_METRICS = (("T2V R@1", "t2v_R1"), ("T2V R@5", "t2v_R5"), ("T2V R@10", "t2v_R10"), ("T2V MdR", "t2v_MdR"),
                         ("T2V MnR", "t2v_MnR"), ("V2T R@1", "v2t_R1"))


# ---------------------------------------------------------------- sections
def postprocess_flags(groups: list[Group]) -> list[str]:
    """Every post-processing flag some run has a ``metrics_<flag>.json`` for."""
    return sorted({flag for g in groups for r in g.runs for flag in r.postprocessed})


def _postprocessed_cell(g: Group, flag: str, metric: str) -> str:
    values = g.postprocessed_values(flag, metric)
    if not values:
        return "—"
    have = len(g.postprocessed_runs(flag))
    return fmt_mean_std(values) + (f" ({have} of {len(g.runs)} runs)" if have < len(g.runs) else "")


def main_section(groups: list[Group], papers: list[PaperRow]) -> Section:
    flags = postprocess_flags(groups)
    header = ["group", "method", "dataset", "configuration", "runs", *(h for h, _ in MAIN_METRICS),
              *(f"T2V R@1 [{flag}]" for flag in flags), "paper T2V R@1", *PROVENANCE]
    rows = []
    for g in groups:
        found = match_papers(g, papers, provenance(g, "backbone"))
        rows.append([g.ident, g.method, g.dataset, g.variant or "—", str(len(g.runs)),
                     *(fmt_mean_std(g.values(k)) for _, k in MAIN_METRICS),
                     *(_postprocessed_cell(g, flag, "t2v_R1") for flag in flags), paper_cell(found),
                     *(provenance(g, c) for c in PROVENANCE)])
    return Section("Main table", [
        "One row per group of runs that differ only in seed: mean ± sample std over the seeds (no ± with one "
        "seed). Metrics in percent (MdR/MnR: 1-based ranks), read from each run's `test/metrics.json`. "
        + ("`T2V R@1 [<flag>]` is the same after test-time post-processing (`test/metrics_<flag>.json`, see "
           "\"Post-processed\" below); every other column is the plain number. " if flags else "")
        + "`paper T2V R@1` is the published number for the same method and dataset (`configs/paper_results.csv`), "
        "never ours.", Table(header, rows)])


def _what_it_sees(record: dict[str, Any]) -> str:
    info = record.get("postprocess", {})
    bank = info.get("bank") or {}
    if info.get("name") == "dsl":
        return f"all {fmt_value(bank.get('size', '?'))} test queries at once (transductive)"
    if bank:
        return f"bank of {fmt_value(bank.get('size', '?'))} {bank.get('split', '?')}-split texts"
    return "?"


def postprocess_section(groups: list[Group]) -> Section | None:
    """Post-processed numbers (``metrics_<flag>.json``), one row per group and flag, next to the plain T2V R@1."""
    flags = postprocess_flags(groups)
    if not flags:
        return None
    rows = []
    for g in groups:
        for flag in flags:
            runs = g.postprocessed_runs(flag)
            if not runs:
                continue
            records = [r.postprocessed[flag] for r in runs]
            params = " / ".join(dict.fromkeys(", ".join(f"{k}={fmt_value(v)}" for k, v in
                                                        rec["postprocess"].get("params", {}).items())
                                              for rec in records)) or "—"
            sees = " / ".join(dict.fromkeys(_what_it_sees(rec) for rec in records))
            v2t_plain = any("not post-processed" in str(rec["postprocess"].get("directions", {}).get("v2t", ""))
                            for rec in records)
            cells = []
            for _, key in POSTPROCESSED_METRICS:
                cells.append("plain (not post-processed)" if key.startswith("v2t") and v2t_plain
                             else fmt_mean_std(g.postprocessed_values(flag, key)))
            delta = [float(r.postprocessed[flag]["metrics"]["t2v_R1"]) - float(r.metrics["t2v_R1"]) for r in runs]
            rows.append([g.ident, g.method, flag, params, sees, f"{len(runs)} of {len(g.runs)}", *cells,
                         fmt_mean_std([float(r.metrics["t2v_R1"]) for r in runs]), fmt_mean_std(delta)])
    return Section("Post-processed (test time)", [
        "Numbers after test-time post-processing of the same runs' scores, read from `test/metrics_<flag>.json` "
        "(mean ± sample std over the runs that have the file); they never replace the plain numbers above. `dsl` "
        "(CAMoE's dual softmax) re-weights every score by a prior computed over all test queries at once, i.e. it "
        "sees the other test queries (transductive); `qbnorm` (QB-Norm, dynamic inverted softmax) normalises with a "
        "bank of training-split texts and leaves video-to-text alone. `plain T2V R@1` is over the same runs; "
        "Δ = post-processed − plain, per run.",
        Table(["group", "method", "flag", "parameters", "sees", "runs", *(h for h, _ in POSTPROCESSED_METRICS),
               "plain T2V R@1", "ΔT2V R@1"], rows)])


def paper_section(groups: list[Group], papers: list[PaperRow]) -> Section:
    keys = ("t2v_R1", "t2v_R5", "t2v_R10", "t2v_MnR", "v2t_R1", "v2t_R5", "v2t_R10")
    rows = []
    for g in groups:
        found = match_papers(g, papers, provenance(g, "backbone"))
        setups: dict[tuple[str, str, str, str], dict[str, PaperRow]] = {}
        for r in found:
            setups.setdefault((r.method, r.backbone, r.split, r.source), {})[r.metric] = r
        for (method, backbone, split, source), values in setups.items():
            rows.append([g.ident, g.label, "ours: " + fmt_mean_std(g.values("t2v_R1")), method, backbone, split,
                         *(f"{values[k].value:g}" if k in values else "—" for k in keys), source])
    blocks: list[Any] = ["Published numbers next to ours, matched by method and dataset; a paper row naming only "
                         "the class (`CLIP4Clip`) matches every variant of it. Our backbone, data and training "
                         "budget may differ completely (see the provenance columns)."]
    if rows:
        blocks.append(Table(["group", "ours", "ours T2V R@1", "paper method", "paper backbone", "paper split",
                             *(f"paper {k}" for k in keys), "source"], rows))
    else:
        blocks.append("No group matches a paper row (SynthVTR, for one, has no published numbers).")
    return Section("Papers' numbers", blocks)


def sweep_section(path: Path, groups: list[Group]) -> Section:
    members = [g for g in groups if all(path.resolve() in r.path.resolve().parents for r in g.runs)]
    blocks: list[Any] = []
    keys = sorted(set().union(*(g.config for g in members))) if members else []
    swept = [k for k in keys if len({repr(g.config.get(k, "<unset>")) for g in members}) > 1]
    shared = [k for k in swept if all(k in g.config for g in members)]
    shown = (shared or swept)[:MAX_SWEEP_COLUMNS]
    hidden = len(swept) - len(shown)
    rows = [[g.ident, g.method, *(fmt_value(g.config.get(k, "<unset>")) for k in shown), g.variant or "—",
             ",".join(str(s) for s in g.seeds()), *(fmt_mean_std(g.values(m)) for _, m in SWEEP_METRICS)]
            for g in members]
    blocks.append(f"`{path}`: {len(members)} settings, {sum(len(g.runs) for g in members)} runs. Swept parameters "
                  f"are the config values that differ between the runs (seed and bookkeeping left out)"
                  + (f"; {hidden} more differ (they are in the configuration column)." if hidden else "."))
    blocks.append(Table(["group", "method", *(short_key(k) for k in shown), "configuration", "seeds",
                         *(h for h, _ in SWEEP_METRICS)], rows))
    summary = sweep_summary(path)
    if summary is not None:
        failed = [s.get("run", "?") for s in summary if s.get("returncode") not in (0, None) or not s.get("metrics")]
        blocks.append(f"`sweep_summary.json`: {len(summary)} runs launched, {len(failed)} failed"
                      + (": " + ", ".join(f"`{f}`" for f in failed) if failed else "."))
    for param, png in plots.sweep_plots(members, shown):
        name = f"sweep_{path.name}_{short_key(param)}.png".replace("/", "_")
        blocks.append(Figure(name, png, f"{path.name}: test T2V R@1 against {short_key(param)}, "
                                        "mean ± sample std over seeds"))
    return Section(f"Sweep {path.name}", blocks)


def retest_notes(retests: list[tuple[Run, Run]]) -> list[str]:
    notes = []
    for retest, original in retests:
        diff = max(abs(float(retest.metrics[k]) - float(original.metrics[k])) for k in REQUIRED_METRICS)
        notes.append(f"`{retest.path}` re-tests (`main.py test --ckpt_path {checkpoint_path(retest)}`) the run "
                     f"`{original.path}`: left out of the groups; its metrics differ from that run's test by at most "
                     f"{diff:.2e} ({', '.join(REQUIRED_METRICS)}).")
    return notes


def checks_section(groups: list[Group], matrices: bool, retests: list[tuple[Run, Run]] | None = None) -> Section:
    notes = retest_notes(retests or [])
    mismatches: list[str] = []
    for g in groups:
        seeds = g.seeds()
        dupes = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
        if dupes:
            notes.append(f"{g.ident} {g.label}: seed {dupes} appears more than once (a re-test of one checkpoint?); "
                         "the mean counts every run.")
        if len(g.runs) == 1:
            notes.append(f"{g.ident} {g.label}: one seed only, no spread.")
        if matrices:
            for r in g.runs:
                mismatches += recheck(r)
                for flag in r.postprocessed:
                    mismatches += recheck(r, flag)
    if matrices:
        runs = [r for g in groups for r in g.runs]
        registered = sum(r.registered for r in runs)
        postprocessed = sum(len(r.postprocessed) for r in runs)
        sources = []
        if registered < len(runs):
            sources.append("a run folder's from `sim_t2v.npy` + `text_to_video.json`")
        if registered:
            sources.append("a registered run's from `queries.npz`, which `register` wrote from the full matrix after "
                           "checking every metric against it; the matrix's sha256 is in the run's metrics.json")
        notes.insert(0, f"Every metric ({', '.join(RECHECKED)}) of every run"
                        + (f" and of its {postprocessed} post-processed record(s) (`sim_t2v_<flag>.npy` or "
                           "`queries_<flag>.npz`)" if postprocessed else "")
                        + f" was recomputed from its per-query ranks, ties pessimistic ({'; '.join(sources)}): "
                        + f"{len(mismatches) or 'no'} mismatch(es) with the metrics files.")
        notes[1:1] = mismatches
    return Section("Checks", notes or ["Nothing to report."])


# ---------------------------------------------------------------- CLI
def resolve(name: str, groups: list[Group]) -> Group:
    for test in (lambda g: g.ident == name, lambda g: g.label == name, lambda g: g.method == name,
                 lambda g: name.lower() in g.label.lower()):
        hits = [g for g in groups if test(g)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ReportError(f"--compare {name!r} matches several groups: "
                              + "; ".join(f"{g.ident} {g.label}" for g in hits) + ". Use the group id (G1, ...).")
    raise ReportError(f"--compare {name!r} matches no group; groups: "
                      + "; ".join(f"{g.ident} {g.label}" for g in groups))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.report",
                                     description="Comparison report from run artifacts (README 'Comparison report').")
    parser.add_argument("inputs", nargs="+", help="run folders, sweep folders or glob patterns")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder (report.md, index.html, plots/, thumbs/)")
    parser.add_argument("--compare", nargs=2, action="append", metavar=("A", "B"), default=[],
                        help="paired bootstrap of group A vs B (id G1, label, method or unique substring); repeatable")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of the query sample")
    parser.add_argument("--queries", type=int, default=5, metavar="N",
                        help="sample queries per kind (worst, best, random) and group in the query browser (default 5)")
    parser.add_argument("--no-thumbnails", action="store_true",
                        help="query browser without thumbnails (no video decoding)")
    parser.add_argument("--papers", type=Path, default=PAPER_CSV, help="paper numbers CSV")
    parser.add_argument("--merge-commits", action="store_true",
                        help="group runs of the same config across code versions (git sha); default keeps them apart")
    parser.add_argument("--no-matrices", action="store_true",
                        help="read metrics.json/config only: no bootstrap, rank plots, checks or sample queries")
    parser.add_argument("--title", default="vtr comparison report")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the report to W&B: its tables, per-query results and the report folder as an "
                             "artifact (offline unless WANDB_MODE says otherwise)")
    parser.add_argument("--wandb-project", default="vtr-report", help="W&B project of --wandb (default vtr-report)")
    parser.add_argument("--wandb-name", default=None, help="W&B run name of --wandb (default: the --out folder name)")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> tuple[list[Section], list[Group]]:
    """The report's sections and the groups of runs they describe."""
    if args.queries < 1:
        raise ReportError(f"--queries {args.queries}: need at least 1 query per kind.")
    found, sweeps = discover(args.inputs)
    runs, retests = split_retests(found)
    groups = group_runs(runs, merge_commits=args.merge_commits)
    papers = load_papers(args.papers)
    matrices = not args.no_matrices
    intro = Section("Inputs", [
        f"{len(runs)} runs in {len(groups)} groups"
        + (f" (+ {len(retests)} re-test(s) of their checkpoints, listed under Checks)" if retests else "")
        + " from " + ", ".join(f"`{p}`" for p in args.inputs)
        + f"; generated {time.strftime('%Y-%m-%d %H:%M')} by `python -m experiments.report`. Groups: "
        + "; ".join(f"**{g.ident}** {g.label} ({g.dataset}, {len(g.runs)} runs)" for g in groups) + "."])
    sections = [intro, main_section(groups, papers)]
    postprocessed = postprocess_section(groups)
    if postprocessed is not None:
        sections.append(postprocessed)
    sections.append(paper_section(groups, papers))
    if matrices:
        explicit = [(resolve(a, groups), resolve(b, groups)) for a, b in args.compare]
        pairs = list(explicit)
        skipped = []
        if not args.compare and len(groups) <= 4:
            for a, b in itertools.combinations(groups, 2):
                if a.dataset == b.dataset and same_test_set(a, b):
                    pairs.append((a, b))
                else:
                    skipped.append(f"{a.ident} and {b.ident} were tested on different test sets: not compared.")
        comparisons = [compare(a, b, args.resamples, args.seed) for a, b in pairs]
        sections.append(comparison_section(comparisons, skipped, args.resamples))
        robust = robustness.section(groups, explicit or None, args.resamples, args.seed)
        if robust is not None:
            sections.append(robust)
    sections += [sweep_section(p, groups) for p in sweeps]
    figures: list[Any] = []
    curves = plots.training_curves(groups)
    if curves:
        figures.append(Figure("training_curves.png", curves, "train/loss per step and val/t2v_R1 per epoch "
                                                             "(metrics.csv), one line per run"))
    usage = plots.expert_usage_histograms(groups)
    if usage:
        figures.append(Figure("expert_usage.png", usage, "share of test videos routed to each expert "
                                                         "(test/expert_usage.json, seeds summed)"))
    if matrices:
        hist = plots.rank_histograms(groups)
        if hist:
            figures.append(Figure("gt_rank_hist.png", hist, "rank of the ground-truth video, per group"))
    sections.append(Section("Plots", figures or ["No metrics.csv or similarity matrices to plot."]))
    sections.append(checks_section(groups, matrices, retests))
    if matrices:
        sections.append(browser.section(groups, args.seed, args.queries, args.out, not args.no_thumbnails))
    return sections, groups


def main(argv: list[str] | None = None) -> Path:
    """Write ``<out>/report.md`` and ``<out>/index.html``; returns the output folder."""
    args = parse_args(argv)
    started = time.perf_counter()
    sections, groups = build(args)
    write(args.out, args.title, sections)
    print(f"report written to {args.out}/index.html and report.md ({time.perf_counter() - started:.1f} s)")
    if args.wandb:
        from experiments.report import wandb_log

        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        folder = wandb_log.log(args.out, sections, groups, args.wandb_project, args.wandb_name, settings,
                               matrices=not args.no_matrices)
        offline = (os.environ.get("WANDB_MODE") or "offline") in ("offline", "dryrun")
        if folder is not None:
            print(f"W&B run in {folder}" + (f" (offline; upload it with `wandb sync {folder}`)" if offline else ""))
    return args.out


def cli() -> None:
    try:
        main()
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)



