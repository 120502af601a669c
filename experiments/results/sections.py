"""The sections more than one program builds from runs: the provenance columns (``provenance``), the paired
comparison (``comparison_section``) and the recheck of a run's metrics against its per-query ranks (``recheck``).

The comparison report (``experiments.report``), the README/docs tables (``experiments.tables``) and the results
registry's tests use them; they live here, outside any command line, so no program imports another's CLI.
"""

from __future__ import annotations

from typing import Any

from experiments.results import registry_format as registry
from experiments.results.render import Section, Table
from experiments.results.runs import Group, Run, fmt_value
from experiments.results.stats import Comparison, fmt_mean_std


def _find_keys(value: Any, needle: str, prefix: str = "") -> list[tuple[str, Any]]:
    """Every (dotted key, value) whose key contains ``needle``, anywhere in nested dicts/lists."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}{k}"
            if needle in str(k).lower() and not isinstance(v, (dict, list)):
                found.append((path, v))
            found += _find_keys(v, needle, path + ".")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _find_keys(v, needle, f"{prefix}{i}.")
    return found


def _backbone(run: Run) -> str:
    spec = run.config.get("model", {}).get("init_args", {}).get("backbone")
    if not isinstance(spec, dict):
        return "?"
    args = spec.get("init_args") or {}
    parts = [str(spec.get("class_path", "?")).rsplit(".", 1)[-1]]
    for key in ("model_name", "pretrained"):
        if args.get(key):
            parts.append(str(args[key]))
    if "embed_dim" in args and "model_name" not in args:
        parts.append(f"dim {args['embed_dim']}")
    return " ".join(parts)


def _captions(run: Run) -> str:
    aux = run.record.get("data", {}).get("aux_captions")
    if aux is None:
        aux = run.config.get("data", {}).get("init_args", {}).get("aux_captions")
    if not aux:
        return "none"
    text = ", ".join(f"{k}: {v}" for k, v in aux.items()) if isinstance(aux, dict) else str(aux)
    rates = {v for _, v in _find_keys(run.record, "hallucination") + _find_keys(run.config, "hallucination")}
    if rates:
        text += " (hallucination " + "/".join(fmt_value(r) for r in sorted(rates, key=str)) + ")"
    elif run.dataset == "synthvtr":
        text += " (hallucination rate not recorded in the run's artifacts)"
    return text


def _leakage(run: Run) -> str:
    """The run's computed leakage verdict (``metrics.json`` ``leakage``, from its lineage; ``datamodules/lineage.py``).

    A run written before lineage was recorded has no verdict: said as such, never as "none"."""
    from datamodules.lineage import verdict_text

    if "lineage" not in run.record:
        legacy = run.record.get("leakage")
        listed = ", ".join(str(v) for v in legacy) if isinstance(legacy, list) else (str(legacy) if legacy else "")
        return "not computed (run predates lineage records)" + (f"; it declared: {listed}" if listed else "")
    return verdict_text(run.record.get("leakage") or [], run.record.get("leakage_unverified") or [])


PROVENANCE = {
    "seeds": lambda r: str(r.seed),
    "backbone": _backbone,
    "frames": lambda r: fmt_value(r.record.get("data", {}).get("num_frames", "?")),
    "devices": lambda r: fmt_value(r.record.get("world_size", "?")),
    "precision": lambda r: fmt_value(r.record.get("precision", "?")),
    "model selection": lambda r: str(r.record.get("data", {}).get("model_selection", "?")),
    "caption source": _captions,
    "post-processing": lambda r: ", ".join(f"metrics_{flag}.json" for flag in r.postprocessed) or "none",
    "leakage": _leakage,
    "test set": lambda r: f"{r.record.get('num_texts', '?')} × {r.record.get('num_videos', '?')}, "
                          f"{r.record.get('data', {}).get('protocol', '?')}",
}


def provenance(group: Group, column: str) -> str:
    values = [PROVENANCE[column](r) for r in group.runs]
    if column == "seeds":
        return ",".join(values)
    return " / ".join(dict.fromkeys(values))


def comparison_section(comparisons: list[Comparison], skipped: list[str], resamples: int) -> Section:
    blocks: list[Any] = [
        f"ΔR@1 (T2V, points) = A − B on the same queries. 95 % percentile interval of a paired bootstrap over "
        f"queries ({resamples:,} resamples, seeded): per seed pair (seeds matched by value) and pooled (the same "
        "resampled queries for every seed pair, Δ averaged over the pairs). The interval covers test-set "
        "sampling only; the per-seed spread shows training noise."]
    rows = []
    for c in comparisons:
        per_seed = "; ".join(f"s{s}: {iv.text()}" for s, iv in zip(c.seeds, c.per_seed, strict=True))
        spread = fmt_mean_std([iv.delta for iv in c.per_seed])
        verdict = "A better" if c.pooled.low > 0 else "B better" if c.pooled.high < 0 else "not resolved"
        rows.append([f"{c.a.ident} {c.a.label}", f"{c.b.ident} {c.b.label}", str(c.num_queries), per_seed, spread,
                     c.pooled.text(), verdict + (f" ({c.note})" if c.note else "")])
    if rows:
        blocks.append(Table(["A", "B", "queries", "ΔR@1 per seed [95 % CI]", "per-seed Δ mean ± std",
                             "pooled ΔR@1 [95 % CI]", "verdict"], rows))
    else:
        blocks.append("No pair of groups to compare (pass `--compare A B`; by default every pair sharing a test "
                      "set is compared when there are at most 4 groups).")
    blocks += skipped
    return Section("Paired comparison (bootstrap over queries)", blocks)



RECHECKED = ("t2v_R1", "t2v_R5", "t2v_R10", "t2v_MdR", "t2v_MnR", "v2t_R1", "v2t_R5", "v2t_R10", "v2t_MdR", "v2t_MnR",
             "rsum")
RECHECK_TOLERANCE = 1e-6  # both sides are the same float64 arithmetic on the same integer ranks


def recheck(run: Run, flag: str | None = None) -> list[str]:
    """Every rank metric of ``metrics.json`` (or ``metrics_<flag>.json``) recomputed from the run's per-query
    ranks; one note per disagreeing metric. A post-processing that left v2t plain is checked with the plain ranks."""
    test = run.test if flag is None else run.postprocessed_test(flag)
    record = run.metrics if flag is None else run.postprocessed[flag]["metrics"]
    v2t = test.v2t_ranks if test.v2t_ranks is not None else run.test.v2t_ranks
    again = registry.metrics_from_ranks(test.ranks, v2t)
    name = "metrics.json" if flag is None else f"metrics_{flag}.json"
    source = test.source.name if test.source is not None else "?"
    return [f"{run.path}: {key} recomputed from {source} is {again[key]:.4f}, {name} says {float(record[key]):.4f}."
            for key in RECHECKED if key in again and isinstance(record.get(key), (int, float))
            and abs(again[key] - float(record[key])) > RECHECK_TOLERANCE]
