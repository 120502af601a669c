"""The comparison report (experiments/report): real run folders from the CLI, then the report on them."""

from __future__ import annotations

import csv
import json
import re
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

from experiments.report import ReportError
from experiments.report import main as report
from experiments.report.papers import COLUMNS, PAPER_CSV, load_papers
from experiments.report.runs import load_run, split_retests
from experiments.report.stats import bootstrap_means, mean_std, paired_bootstrap, resample_indices
from main import main
from tests.run_helpers import TINY_CLIP4CLIP, csv_logger

METRIC_COLUMNS = {"T2V R@1": "t2v_R1", "T2V R@5": "t2v_R5", "T2V R@10": "t2v_R10", "T2V MdR": "t2v_MdR",
                  "T2V MnR": "t2v_MnR", "V2T R@1": "v2t_R1", "V2T R@5": "v2t_R5", "V2T R@10": "v2t_R10",
                  "rsum": "rsum"}


@pytest.fixture(scope="module")
def runs(fake_msrvtt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two methods (CLIP4Clip meanP / seqTransf) x two seeds, one epoch each, in CSVLogger layout."""
    out = tmp_path_factory.mktemp("report_runs")
    for header in ("meanP", "seqTransf"):
        for seed in (0, 1):
            main(["fit", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root", str(fake_msrvtt),
                  "--seed_everything", str(seed), "--model.init_args.sim_header", header,
                  "--trainer.max_epochs", "1", "--trainer.logger", csv_logger(out, f"{header}_s{seed}"),
                  # MSR-VTT's shipped selection (the tiny config selects on test for the pipeline tests)
                  "--data.init_args.val_protocol", "heldout"])
    return out


def table(markdown: str, section: str) -> list[dict[str, str]]:
    """Rows of the first table under ``## section`` as dicts keyed by the header."""
    lines = markdown.split(f"## {section}", 1)[1].split("\n## ", 1)[0].splitlines()  # up to the next section
    rows = [line for line in lines if line.startswith("|")]
    split = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]
    header, body = split[0], split[2:]
    end = next((i for i, row in enumerate(body) if len(row) != len(header)), len(body))
    return [dict(zip(header, row, strict=True)) for row in body[:end]]


@pytest.fixture(scope="module")
def built(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("report") / "cmp"
    report([str(runs), "--out", str(out), "--resamples", "2000"])
    return {"out": out, "md": (out / "report.md").read_text(), "html": (out / "index.html").read_text()}


def test_report_files_are_written_and_html_is_self_contained(built: dict) -> None:
    assert (built["out"] / "report.md").is_file() and (built["out"] / "index.html").is_file()
    html = built["html"]
    assert html.count("data:image/png;base64,") >= 2  # training curves + rank histogram, inline
    # inline CSS and scripts only: no asset the page would fetch from elsewhere
    assert not re.search(r"""<[^>]+ (src|href)=['"]?(https?:|//)""", html) and "<script src" not in html
    assert html.count("<link") == 1 and "<link rel='icon' href='data:,'>" in html
    assert (built["out"] / "plots" / "training_curves.png").is_file()


def test_main_table_is_one_row_per_method_with_the_mean_over_seeds(built: dict, runs: Path) -> None:
    rows = table(built["md"], "Main table")
    assert sorted(r["method"] for r in rows) == ["CLIP4Clip meanP", "CLIP4Clip seqTransf"]
    records: dict[str, list[dict]] = {}
    for path in runs.rglob("test/metrics.json"):
        header = yaml.safe_load((path.parent / "config.yaml").read_text())["model"]["init_args"]["sim_header"]
        records.setdefault(header, []).append(json.loads(path.read_text()))
    for row in rows:
        recs = records[row["method"].split()[1]]
        assert row["runs"] == "2" and row["seeds"] == "0,1"
        for column, key in METRIC_COLUMNS.items():
            values = [r["metrics"][key] for r in recs]
            assert row[column] == f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}", column


def test_provenance_columns_are_filled_from_the_artifacts(built: dict) -> None:
    for row in table(built["md"], "Main table"):
        assert row["dataset"] == "msrvtt"
        assert row["backbone"] == "OpenCLIPBackbone vtr-tiny-clip"
        assert row["frames"] == "4" and row["devices"] == "1" and row["precision"] == "32-true"
        assert row["model selection"] == "4 held-out training videos"
        assert row["caption source"] == "none" and row["post-processing"] == "none" and row["leakage"] == "none"
        assert row["test set"].startswith("6 × 6, 1k-A")


def test_paper_columns_come_from_the_csv_and_never_replace_ours(built: dict, runs: Path, tmp_path: Path) -> None:
    rows = {r["method"]: r for r in table(built["md"], "Main table")}
    assert "43.1 (CLIP4Clip meanP" in rows["CLIP4Clip meanP"]["paper T2V R@1"]
    assert "44.5 (CLIP4Clip seqTransf" in rows["CLIP4Clip seqTransf"]["paper T2V R@1"]
    assert "44.5" not in rows["CLIP4Clip meanP"]["paper T2V R@1"]  # another named variant never matches
    papers = tmp_path / "papers.csv"
    with papers.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        w.writerow(["CLIP4Clip seqTransf", "msrvtt", "ViT-B/32", "1k-A", "t2v_R1", "99.9", "test paper, Table 9"])
    out = tmp_path / "custom"
    report([str(runs), "--out", str(out), "--papers", str(papers), "--no-matrices"])
    md = (out / "report.md").read_text()
    custom = {r["method"]: r for r in table(md, "Main table")}
    assert custom["CLIP4Clip seqTransf"]["paper T2V R@1"].startswith("99.9")
    assert custom["CLIP4Clip seqTransf"]["T2V R@1"] == rows["CLIP4Clip seqTransf"]["T2V R@1"]
    assert custom["CLIP4Clip meanP"]["paper T2V R@1"] == "—"
    assert "test paper, Table 9" in md.split("## Papers' numbers")[1]


def test_bootstrap_section_compares_the_pair(built: dict, runs: Path) -> None:
    rows = table(built["md"], "Paired comparison (bootstrap over queries)")
    assert len(rows) == 1
    row = rows[0]
    assert row["A"].startswith("G1 CLIP4Clip meanP") and row["B"].startswith("G2 CLIP4Clip seqTransf")
    assert row["queries"] == "6" and "s0:" in row["ΔR@1 per seed [95 % CI]"] and "s1:" in row["ΔR@1 per seed [95 % CI]"]
    r1 = {h: statistics.fmean(json.loads(p.read_text())["metrics"]["t2v_R1"] for p in runs.glob(f"{h}_s*/*/test/"
                                                                                                  "metrics.json"))
          for h in ("meanP", "seqTransf")}
    assert row["pooled ΔR@1 [95 % CI]"].startswith(f"{r1['meanP'] - r1['seqTransf']:+.2f} [")
    assert "no mismatch" in built["md"].split("## Checks")[1]


def test_registered_copies_give_the_report_of_their_run_folders(built: dict, runs: Path, tmp_path: Path) -> None:
    """Registered into a study (compact files, no matrix), the four runs give the same tables, bootstrap intervals,
    plots and sampled queries as their run folders."""
    from experiments.report.register import main as register

    study = tmp_path / "results" / "cmp"
    # --allow-dirty: these runs record the tester's working tree, which may hold uncommitted changes
    register([f"{p}={p.parent.name}" for p in sorted(runs.glob("*/version_0"))]
             + ["--study", str(study), "--allow-dirty"])
    assert not list(study.rglob("*.npy"))
    out = tmp_path / "registered"
    report([str(study), "--out", str(out), "--resamples", "2000"])
    md = (out / "report.md").read_text()
    for section in ("Main table", "Paired comparison (bootstrap over queries)"):
        assert table(md, section) == table(built["md"], section), section
    for png in ("gt_rank_hist.png", "training_curves.png"):
        assert (out / "plots" / png).read_bytes() == (built["out"] / "plots" / png).read_bytes(), png
    assert "no mismatch" in md.split("## Checks")[1] and "a registered run's from `queries.npz`" in md

    def queries(html: str) -> list:
        data = json.loads(html.split("<script type='application/json' id='qb-data'>")[1].split("</script>")[0])
        return [([v["id"] for v in s["videos"]], [(q["kinds"], q["res"]) for q in s["queries"]]) for s in data["sets"]]

    assert queries((out / "index.html").read_text()) == queries(built["html"])


def test_sweep_table_rows_are_the_swept_parameter(built: dict, runs: Path, tmp_path: Path) -> None:
    rows = table(built["md"], f"Sweep {runs.name}")
    assert sorted(r["sim_header"] for r in rows) == ["meanP", "seqTransf"]
    assert all(r["seeds"] == "0,1" for r in rows)
    sweep = tmp_path / "sweep"
    shutil.copytree(runs, sweep)
    (sweep / "sweep_summary.json").write_text(json.dumps([{"run": "ok", "returncode": 0, "metrics": {"t2v_R1": 1}},
                                                          {"run": "broken", "returncode": 1, "metrics": None}]))
    report([str(sweep), "--out", str(tmp_path / "out"), "--no-matrices"])
    assert "2 runs launched, 1 failed: `broken`" in (tmp_path / "out" / "report.md").read_text()


def test_numeric_swept_parameter_gets_a_plot(runs: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "lr_sweep"
    shutil.copytree(runs, sweep)
    for path in sweep.rglob("test/config.yaml"):
        config = yaml.safe_load(path.read_text())
        config["model"]["init_args"]["lr"] = 1e-3 if config["model"]["init_args"]["sim_header"] == "meanP" else 1e-2
        path.write_text(yaml.safe_dump(config))
    report([str(sweep), "--out", str(tmp_path / "out"), "--no-matrices"])
    rows = table((tmp_path / "out" / "report.md").read_text(), "Sweep lr_sweep")
    assert sorted((r["sim_header"], r["lr"]) for r in rows) == [("meanP", "0.001"), ("seqTransf", "0.01")]
    assert (tmp_path / "out" / "plots" / "sweep_lr_sweep_lr.png").stat().st_size > 1000


def test_explicit_compare_and_an_unknown_group(runs: Path, tmp_path: Path) -> None:
    report([str(runs / "meanP_s0"), str(runs / "seqTransf_s*"), "--out", str(tmp_path / "a"),
            "--compare", "seqTransf", "meanP", "--resamples", "500"])
    rows = table((tmp_path / "a" / "report.md").read_text(), "Paired comparison (bootstrap over queries)")
    assert rows[0]["A"].startswith("G2 CLIP4Clip seqTransf") and rows[0]["ΔR@1 per seed [95 % CI]"].startswith("s0:")
    with pytest.raises(ReportError, match="matches no group"):
        report([str(runs), "--out", str(tmp_path / "b"), "--compare", "NarVid", "G1"])


def _copy_run(runs: Path, tmp_path: Path) -> Path:
    run = tmp_path / "copy" / "version_0"
    shutil.copytree(runs / "meanP_s0" / "version_0", run)
    return run


def test_leakage_and_caption_flags_are_shown(runs: Path, tmp_path: Path) -> None:
    run = _copy_run(runs, tmp_path)
    record = json.loads((run / "test" / "metrics.json").read_text())
    record["leakage"] = ["test of X: model selection read 6 test videos [msrvtt/val]"]
    record["leakage_unverified"] = ["store.jsonl has no lineage record"]
    record["data"]["aux_captions"] = {"narration": "captions/narration_h0.5.jsonl"}
    record["data"]["caption_store"] = {"hallucination_rate": 0.5}
    (run / "test" / "metrics.json").write_text(json.dumps(record))
    legacy = _copy_run(runs, tmp_path / "legacy")
    old = json.loads((legacy / "test" / "metrics.json").read_text())
    del old["lineage"], old["leakage"], old["leakage_unverified"]
    old["data"] = record["data"]
    (legacy / "test" / "metrics.json").write_text(json.dumps(old))
    report([str(run), str(legacy), "--out", str(tmp_path / "out"), "--no-matrices"])
    (row,) = table((tmp_path / "out" / "report.md").read_text(), "Main table")  # one configuration, two runs
    assert row["leakage"] == ("test of X: model selection read 6 test videos [msrvtt/val] (unverified: store.jsonl has "
                              "no lineage record) / not computed (run predates lineage records)")
    assert row["caption source"] == "narration: captions/narration_h0.5.jsonl (hallucination 0.5)"


def test_expert_usage_of_a_mixture_of_experts_run_is_plotted(runs: Path, tmp_path: Path) -> None:
    run = _copy_run(runs, tmp_path)
    report([str(run), "--out", str(tmp_path / "plain"), "--no-matrices"])
    assert not (tmp_path / "plain" / "plots" / "expert_usage.png").exists()  # only runs that have the file
    usage = {"videos": 4, "active": 2, "entropy_bits": 1.0, "effective_experts": 2.0,
             "experts": [{"index": i, "group": g, "selected": n, "mean_gate": 0.1}
                         for i, (g, n) in enumerate([("captions", 4), ("frames", 0), ("both", 4)])]}
    (run / "test" / "expert_usage.json").write_text(json.dumps(usage))
    report([str(run), "--out", str(tmp_path / "moe"), "--no-matrices"])
    assert (tmp_path / "moe" / "plots" / "expert_usage.png").stat().st_size > 0
    assert "plots/expert_usage.png" in (tmp_path / "moe" / "report.md").read_text()


def test_empty_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReportError, match=r"empty: no run found \(no test/metrics.json"):
        report([str(empty), "--out", str(tmp_path / "out")])
    with pytest.raises(ReportError, match="matches nothing"):
        report([str(tmp_path / "nothing_*"), "--out", str(tmp_path / "out")])


def test_malformed_metrics_json_is_an_error_naming_the_file(runs: Path, tmp_path: Path) -> None:
    run = _copy_run(runs, tmp_path)
    bad = run / "test" / "metrics.json"
    bad.write_text('{"metrics": {"t2v_R1": ')
    with pytest.raises(ReportError, match=rf"{re.escape(str(bad))}: cannot read the test metrics .*main.py test"):
        report([str(run.parent), "--out", str(tmp_path / "out")])
    bad.write_text(json.dumps({"metrics": {"t2v_R1": 1.0}}))
    with pytest.raises(ReportError, match=rf"{re.escape(str(bad))}: 'metrics' lacks numeric t2v_R5"):
        report([str(run.parent), "--out", str(tmp_path / "out")])


def test_sim_matrix_that_disagrees_with_the_ids_is_an_error(runs: Path, tmp_path: Path) -> None:
    run = _copy_run(runs, tmp_path)
    np.save(run / "test" / "sim_t2v.npy", np.zeros((5, 6), dtype=np.float32))
    with pytest.raises(ReportError, match=r"sim_t2v.npy: shape \(5, 6\) disagrees with text_ids.json \(6 texts\)"):
        report([str(run), "--out", str(tmp_path / "out")])


# ------------------------------------------------------------------ unit tests
def test_bootstrap_equals_a_direct_loop_and_covers_the_observed_delta() -> None:
    rng = np.random.default_rng(7)
    diff = rng.choice([-1.0, 0.0, 1.0], size=37, p=[0.2, 0.5, 0.3])
    resamples, seed = 2500, 3  # three chunks of resamples
    loop = []
    for idx in resample_indices(diff.size, resamples, seed):
        for row in idx:
            loop.append(sum(diff[i] for i in row) / diff.size)
    np.testing.assert_allclose(bootstrap_means(diff, resamples, seed), loop, rtol=0, atol=1e-12)
    interval = paired_bootstrap(diff, resamples, seed)
    low, high = np.percentile(np.array(loop) * 100, [2.5, 97.5])
    assert interval.low == pytest.approx(low) and interval.high == pytest.approx(high)
    assert interval.delta == pytest.approx(diff.mean() * 100)
    assert interval.low <= interval.delta <= interval.high
    # one generator draw of the whole index matrix gives the same resamples (the chunking changes nothing)
    direct = np.random.default_rng(seed).integers(0, diff.size, size=(1000, diff.size))
    np.testing.assert_array_equal(next(resample_indices(diff.size, resamples, seed)), direct)
    assert paired_bootstrap(np.zeros(10), 100, 0).text() == "+0.00 [+0.00, +0.00]"


def test_mean_std_is_the_sample_std() -> None:
    assert mean_std([1.0, 2.0, 4.0]) == (pytest.approx(7 / 3), pytest.approx(statistics.stdev([1, 2, 4])))
    assert mean_std([3.0]) == (3.0, None)


def test_paper_results_csv_schema() -> None:
    with PAPER_CSV.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        rows = list(reader)
    assert rows and len(load_papers()) == len(rows)
    for row in rows:
        assert row["source"].strip() and row["method"].strip() and row["backbone"].strip(), row
        assert float(row["value"]) >= 0
        assert row["dataset"] in {"msrvtt", "msvd", "vatex", "didemo", "activitynet"}, row
        assert row["metric"].split("_")[0] in {"t2v", "v2t"}, row
    key = {(r["method"], r["dataset"], r["backbone"], r["metric"]): float(r["value"]) for r in rows}
    assert key["CLIP4Clip seqTransf", "msrvtt", "ViT-B/32", "t2v_R1"] == 44.5
    assert key["NarVid", "msrvtt", "ViT-B/32", "t2v_R1"] == 51.0
    assert key["NarVid", "msrvtt", "ViT-B/16", "t2v_R1"] == 52.7
    assert key["Conical", "didemo", "ViT-B/16", "t2v_R1"] == 59.2
    assert not any(r["dataset"] == "synthvtr" for r in rows)


# ------------------------------------------------------------------ the demo's report step, re-tests
def test_demo_report_step_on_the_demo_layout(runs: Path, fake_msrvtt: Path, tmp_path: Path) -> None:
    """experiments.demo's last step on the demo's layout (out/<name>/version_0 + a `test --ckpt_path` re-test):
    the re-test is recognised from its artifacts, listed under Checks and not counted in its group."""
    from experiments import demo

    out = tmp_path / "demo"
    shutil.copytree(runs / "meanP_s0", out / "clip4clip_meanP")
    shutil.copytree(runs / "seqTransf_s0", out / "clip4clip_seqTransf")
    best = next((out / "clip4clip_seqTransf" / "version_0" / "checkpoints").glob("best-*.ckpt"))
    retest = main(["test", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root", str(fake_msrvtt),
                   "--model.init_args.sim_header", "seqTransf", "--trainer.logger",
                   csv_logger(out, "clip4clip_seqTransf_retest"), "--ckpt_path", str(best)])
    retest_dir = Path(retest.trainer.log_dir)
    rows = []
    for name in ("clip4clip_meanP", "clip4clip_seqTransf"):
        run_dir = out / name / "version_0"
        rows.append({"name": name, "run_dir": run_dir, "seconds": 1.0, "recompute_diff":
                     demo.recompute_check(run_dir / "test"),
                     "record": json.loads((run_dir / "test" / "metrics.json").read_text())})
    again = json.loads((retest_dir / "test" / "metrics.json").read_text())["metrics"]
    diff = max(abs(again[k] - rows[1]["record"]["metrics"][k]) for k in METRIC_COLUMNS.values())
    summary = demo.finish(out, rows, retest_dir, diff, 0, 5.0).read_text()

    assert f"Full comparison report: `{out / 'report' / 'report.md'}`" in summary
    assert "| clip4clip_seqTransf | " in summary and "max |diff| = 0.00e+00" in summary
    assert "reproduces the end-of-fit test metrics: max |diff| = 0.00e+00" in summary
    md = (out / "report" / "report.md").read_text()
    assert (out / "report" / "index.html").is_file() and md.startswith("# vtr demo")
    assert "2 runs in 2 groups (+ 1 re-test(s) of their checkpoints, listed under Checks)" in md
    rows_md = {r["method"]: r for r in table(md, "Main table")}
    assert rows_md["CLIP4Clip seqTransf"]["runs"] == "1" and rows_md["CLIP4Clip meanP"]["runs"] == "1"
    checks = md.split("## Checks")[1]
    assert (f"`{retest_dir}` re-tests (`main.py test --ckpt_path {best}`) the run "
            f"`{out / 'clip4clip_seqTransf' / 'version_0'}`: left out of the groups; its metrics differ from that "
            "run's test by at most 0.00e+00") in checks
    assert "appears more than once" not in checks

    # the command line on the whole demo folder: the same groups, the re-test again set apart
    report([str(out), "--out", str(tmp_path / "cli"), "--no-matrices"])
    cli_md = (tmp_path / "cli" / "report.md").read_text()
    assert {r["method"]: r["runs"] for r in table(cli_md, "Main table")} == {"CLIP4Clip meanP": "1",
                                                                              "CLIP4Clip seqTransf": "1"}
    assert "left out of the groups" in cli_md.split("## Checks")[1]


def test_a_resumed_fit_and_a_test_of_a_foreign_checkpoint_stay_runs(runs: Path, tmp_path: Path) -> None:
    resumed = _copy_run(runs, tmp_path)  # a fit resumed with --ckpt_path: ckpt_path set, training rows logged
    config = yaml.safe_load((resumed / "test" / "config.yaml").read_text())
    config["ckpt_path"] = str(resumed / "checkpoints" / "last.ckpt")
    (resumed / "test" / "config.yaml").write_text(yaml.safe_dump(config))
    foreign = tmp_path / "foreign" / "version_0"  # test-only run of a checkpoint whose training run is elsewhere
    shutil.copytree(resumed, foreign)
    (foreign / "metrics.csv").write_text("epoch,step,test/t2v_R1\n0,0,10.0\n")
    config["ckpt_path"] = "/elsewhere/run/version_3/checkpoints/best.ckpt"
    (foreign / "test" / "config.yaml").write_text(yaml.safe_dump(config))
    loaded = [load_run(resumed / "test" / "metrics.json"), load_run(foreign / "test" / "metrics.json")]
    kept, retests = split_retests(loaded)
    assert [r.path for r in kept] == [resumed, foreign] and retests == []


def _write_postprocessed(test_dir: Path, flag: str, sim: np.ndarray, postprocess: dict) -> dict:
    """A metrics_<flag>.json + sim_t2v_<flag>.npy pair as BaseRetrievalModule writes them."""
    from lightning_modules.metrics import retrieval_metrics

    record = json.loads((test_dir / "metrics.json").read_text())
    gt = json.loads((test_dir / "text_to_video.json").read_text())
    np.save(test_dir / f"sim_t2v_{flag}.npy", sim.astype(np.float32))
    metrics = retrieval_metrics(sim.astype(np.float32), gt)
    if postprocess.get("directions", {}).get("v2t") == "not post-processed":  # v2t stays the plain matrix's
        plain = retrieval_metrics(np.load(test_dir / "sim_t2v.npy").astype(np.float32), gt)
        metrics.update({k: v for k, v in plain.items() if k.startswith("v2t_")})
        metrics["rsum"] = sum(metrics[f"{d}_R{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10))
    record["metrics"] = {**record["metrics"], **metrics}
    record["postprocess"] = postprocess
    (test_dir / f"metrics_{flag}.json").write_text(json.dumps(record))
    return record


def test_postprocessed_numbers_get_their_own_columns_and_section(runs: Path, tmp_path: Path) -> None:
    from lightning_modules.postprocess import dual_softmax, qb_norm

    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    written: dict[str, list[dict]] = {"dsl": [], "qbnorm": []}
    plain: list[float] = []
    for test_dir in sorted(copy.glob("meanP_s*/version_0/test")):  # only the meanP group is post-processed
        sim = np.load(test_dir / "sim_t2v.npy")
        plain.append(json.loads((test_dir / "metrics.json").read_text())["metrics"]["t2v_R1"])
        written["dsl"].append(_write_postprocessed(test_dir, "dsl", dual_softmax(sim, 100.0), {
            "name": "dsl", "params": {"temperature": 100.0}, "bank": {"split": "test", "size": 6}}))
        bank = np.random.default_rng(0).uniform(-0.1, 0.3, (10, sim.shape[1])).astype(np.float32)
        written["qbnorm"].append(_write_postprocessed(test_dir, "qbnorm", qb_norm(sim, bank), {
            "name": "qbnorm", "params": {"beta": 20.0, "topk": 1}, "bank": {"split": "train", "size": 10},
            "directions": {"t2v": "qbnorm", "v2t": "not post-processed"}}))
    out = tmp_path / "out"
    report([str(copy), "--out", str(out), "--resamples", "200"])
    md = (out / "report.md").read_text()
    rows = {r["method"]: r for r in table(md, "Main table")}
    meanp, seq = rows["CLIP4Clip meanP"], rows["CLIP4Clip seqTransf"]
    for flag, records in written.items():
        values = [r["metrics"]["t2v_R1"] for r in records]
        assert meanp[f"T2V R@1 [{flag}]"] == f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"
        assert seq[f"T2V R@1 [{flag}]"] == "—"
    # the plain columns stay the plain numbers, the provenance column names the files
    assert meanp["T2V R@1"] == f"{statistics.fmean(plain):.2f} ± {statistics.stdev(plain):.2f}"
    assert meanp["post-processing"] == "metrics_dsl.json, metrics_qbnorm.json" and seq["post-processing"] == "none"
    section = {(r["method"], r["flag"]): r for r in table(md, "Post-processed (test time)")}
    assert set(section) == {("CLIP4Clip meanP", "dsl"), ("CLIP4Clip meanP", "qbnorm")}
    dsl, qb = section["CLIP4Clip meanP", "dsl"], section["CLIP4Clip meanP", "qbnorm"]
    assert dsl["parameters"] == "temperature=100" and "transductive" in dsl["sees"] and dsl["runs"] == "2 of 2"
    assert qb["sees"] == "bank of 10 train-split texts" and qb["V2T R@1"] == "plain (not post-processed)"
    assert qb["plain T2V R@1"] == meanp["T2V R@1"]
    # the checks recompute every post-processed R@1 from its matrix too
    checks = md.split("## Checks")[1]
    assert "4 post-processed record(s)" in checks and "no mismatch" in checks
    bad = json.loads((copy / "meanP_s0" / "version_0" / "test" / "metrics_dsl.json").read_text())
    bad["metrics"]["t2v_R1"] = 99.0
    (copy / "meanP_s0" / "version_0" / "test" / "metrics_dsl.json").write_text(json.dumps(bad))
    report([str(copy), "--out", str(out), "--resamples", "200"])
    assert "metrics_dsl.json says 99.000" in (out / "report.md").read_text()
    (copy / "meanP_s0" / "version_0" / "test" / "metrics_dsl.json").write_text('{"metrics": {}}')
    with pytest.raises(ReportError, match=r"metrics_dsl.json: not a post-processed test record"):
        report([str(copy), "--out", str(out), "--no-matrices"])
