"""Collect the pipeline's per-seed ``summary.json`` files into ``results/``: the files themselves, and tables of the
caption measures and stage times (mean ± sample std over seeds) that README ``json-table`` blocks render.

    python -m experiments.care_dpo.collect runs/care_dpo/synthvtr/out/seed*/summary.json \
        --out results/care_dpo_pipeline [--timed "default command=runs/.../summary.json" ...]

``--stores`` copies each seed's preference store as ``preferences_s<seed>.jsonl.gz`` (gzip-compressed) and
recounts its pairs. The retrieval runs go into the registry with ``python -m experiments.registry.register`` (its
compact files: metrics, config, per-query results), like every other method's.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from datamodules.atomic import write_bytes_atomic
from experiments.results import registry_format as registry

MEASURES = ("caption_r1", "family_r1", "attribute_precision", "attribute_recall", "distinct_captions", "caption_words")
SOURCE_NAMES = {"zero_shot": "zero-shot (simulated VLM, \"Describe this video.\")", "sft": "SFT captioner",
                "dgdpo": "DG-DPO captioner"}


def mean_std(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def comparable_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings with each stage's config as a list (summaries written before the pipeline took lists of configs
    record a single path, and no ``data`` entry, for the same run)."""
    configs = {k: [v] if isinstance(v, str) else list(v or []) for k, v in settings.get("configs", {}).items()}
    return {**settings, "configs": {k: v for k, v in configs.items() if v}}


def collect(summaries: list[Path], out: Path, stores: list[Path] | None = None) -> dict[str, Any]:
    """``stores`` (one preference store per summary, same order) are copied next to the summaries and recounted
    with the current pair rules (``inter_conflicts`` included)."""
    records = [json.loads(p.read_text()) for p in summaries]
    if stores:
        from datamodules.preferences import preference_pairs, read_preference_store

        if len(stores) != len(records):
            raise ValueError(f"{len(stores)} stores for {len(records)} summaries: give one store per summary")
        out.mkdir(parents=True, exist_ok=True)
        for record, store in zip(records, stores, strict=True):
            # gzip-compressed (without a timestamp): a store is ~0.75 MB of JSON lines, ~0.1 MB packed, and
            # datamodules.jsonl reads either
            target = out / f"preferences_s{record['seed']}.jsonl.gz"
            if Path(store).resolve() != target.resolve():  # recollecting with the stores already in ``out``
                data = Path(store).read_bytes()
                write_bytes_atomic(target, data if Path(store).name.endswith(".gz") else registry.gzip_bytes(data))
            record["preference_pairs"] = preference_pairs(read_preference_store(store), ("intra", "inter"),
                                                          str(store))[1]
    seeds = sorted(r["seed"] for r in records)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"two summaries share a seed: {seeds}")
    settings = {json.dumps(comparable_settings(r["settings"]), sort_keys=True) for r in records}
    if len(settings) != 1:
        raise ValueError("the summaries come from different pipeline settings; collect each setting separately")
    out.mkdir(parents=True, exist_ok=True)
    for record in records:
        (out / f"summary_s{record['seed']}.json").write_text(json.dumps(record, indent=2) + "\n")
    rows = []
    for source in records[0]["captions"]:
        row: dict[str, Any] = {"source": SOURCE_NAMES.get(source, source)}
        for measure in MEASURES:
            values = [r["captions"][source][measure] for r in records if r["captions"][source].get(measure) is not None]
            if values:
                scale = 100.0 if measure in ("attribute_precision", "attribute_recall", "distinct_captions") else 1.0
                row[measure] = mean_std([v * scale for v in values], 1 if measure == "caption_words" else 2)
        rows.append(row)
    shared = {"seeds": ",".join(map(str, seeds)), "settings": records[0]["settings"],
              "test": f"{records[0]['captions'][next(iter(records[0]['captions']))]['num_queries']} queries x "
                      f"{records[0]['captions'][next(iter(records[0]['captions']))]['num_videos']} videos"}
    (out / "captions.json").write_text(json.dumps({**shared, "rows": rows}, indent=2) + "\n")
    # per seed, not averaged: a seed that ran alone on the machine and one that shared it are different measurements
    stages = sorted({stage for r in records for stage in r["timings_s"]}, key=list(records[0]["timings_s"]).index)
    timing_rows = [{"stage": stage, **{f"seed_{r['seed']}": _seconds(r["timings_s"].get(stage)) for r in records}}
                   for stage in stages]
    timing_rows.append({"stage": "total (stages)",
                        **{f"seed_{r['seed']}": _seconds(sum(r["timings_s"].values())) for r in records}})
    timing_rows.append({"stage": "pipeline wall time (this invocation)",
                        **{f"seed_{r['seed']}": _seconds(r.get("wall_s")) for r in records}})
    (out / "timings.json").write_text(json.dumps({"seeds": shared["seeds"], "rows": timing_rows}, indent=2) + "\n")
    pairs = [{"seed": r["seed"], **r["preference_pairs"],
              **{k.removeprefix("train/"): round(v, 4) for k, v in r["dgdpo_train"].items()
                 if k.startswith("train/reward_accuracy") or k.startswith("train/loss_")}} for r in records]
    (out / "preferences.json").write_text(json.dumps({"seeds": shared["seeds"], "rows": pairs}, indent=2) + "\n")
    return {"captions": rows, "timings": timing_rows, "preferences": pairs}


def timed_runs(entries: list[str], out: Path) -> list[dict[str, Any]]:
    """``LABEL=summary.json`` entries: each whole invocation's wall time beside the retrievers it trained, in
    ``timed_runs.json`` (the summaries are copied next to it as ``timed_<n>_s<seed>.json``)."""
    rows = []
    out.mkdir(parents=True, exist_ok=True)
    for number, entry in enumerate(entries):
        label, sep, path = entry.partition("=")  # a sweep run folder's path may hold "=" itself
        if not sep or not label:
            raise ValueError(f"--timed {entry!r}: give LABEL=path/to/summary.json")
        record = json.loads(Path(path).read_text())
        if record.get("skipped_stages"):
            raise ValueError(f"{path}: stages {record['skipped_stages']} were reused from an earlier run, so its wall "
                             "time is not the whole pipeline's; time a run in a fresh work folder")
        (out / f"timed_{number}_s{record['seed']}.json").write_text(json.dumps(record, indent=2) + "\n")
        rows.append({"run": label, "seed": record["seed"], "retrievers": ", ".join(record["retrieval"]),
                     "stages_s": _seconds(sum(record["timings_s"].values())), "wall_s": _seconds(record["wall_s"]),
                     "wall_min": f"{record['wall_s'] / 60:.1f}"})
    seeds = ",".join(str(seed) for seed in sorted({row["seed"] for row in rows}))
    (out / "timed_runs.json").write_text(json.dumps({"seeds": seeds, "rows": rows}, indent=2) + "\n")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("summaries", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stores", type=Path, nargs="*", default=None,
                        help="the preference store of each summary (same order): copied and recounted")
    parser.add_argument("--timed", nargs="*", default=[], metavar="LABEL=SUMMARY",
                        help="whole runs (fresh work folder) whose wall time goes into timed_runs.json")
    args = parser.parse_args()
    result = collect(args.summaries, args.out, args.stores)
    if args.timed:
        result["timed_runs"] = timed_runs(args.timed, args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
