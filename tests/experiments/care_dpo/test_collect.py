"""experiments.care_dpo.collect: the seeds' summaries collected into one table, the preference stores kept, the
wall time of whole runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.run_helpers import REPO


def test_collect_writes_mean_and_std_over_seeds_times_per_seed_and_refuses_mixed_settings(tmp_path: Path) -> None:
    from experiments.care_dpo.collect import collect

    def summary(seed: int, r1: float, settings: dict) -> Path:
        quality = {"caption_r1": r1, "family_r1": 30.0 + seed, "attribute_precision": 0.5, "attribute_recall": 0.25,
                   "distinct_captions": 1.0, "caption_words": 10.0, "num_queries": 8, "num_videos": 2}
        path = tmp_path / f"s{seed}.json"
        path.write_text(json.dumps({"seed": seed, "settings": settings, "captions": {"sft": quality},
                                    "timings_s": {"sft": 10.0 + seed, "sample": 5.0}, "preference_pairs": {"intra": 4},
                                    "dgdpo_train": {"train/reward_accuracy_intra": 0.5, "train/loss_intra": 0.7}}))
        return path

    out = collect([summary(0, 2.0, {"a": 1}), summary(1, 4.0, {"a": 1})], tmp_path / "out")
    assert out["captions"][0]["caption_r1"] == "3.00 ± 1.41"
    assert out["captions"][0]["attribute_precision"] == "50.00 ± 0.00"
    assert out["timings"][0] == {"stage": "sft", "seed_0": "10", "seed_1": "11"}  # per seed: solo or shared machine
    assert out["timings"][-2] == {"stage": "total (stages)", "seed_0": "15", "seed_1": "16"}
    assert out["timings"][-1] == {"stage": "pipeline wall time (this invocation)", "seed_0": "—", "seed_1": "—"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "captions.json", "preferences.json", "summary_s0.json", "summary_s1.json", "timings.json"]
    from experiments.care_dpo.collect import comparable_settings

    assert comparable_settings({"configs": {"sft": "a.yaml", "data": None}}) == comparable_settings(
        {"configs": {"sft": ["a.yaml"], "data": []}})
    with pytest.raises(ValueError, match="different pipeline settings"):
        collect([summary(0, 2.0, {"a": 1}), summary(1, 4.0, {"a": 2})], tmp_path / "mixed")


def test_collect_keeps_the_preference_stores_gzipped_and_counts_the_committed_ones_unchanged(tmp_path: Path) -> None:
    """A store is copied as ``preferences_s<seed>.jsonl.gz`` (a plain one compressed, a gzipped one as is) and
    recounted from it; the committed seed-0 store gives the pair counts the committed table shows."""
    import gzip

    from experiments.care_dpo.collect import collect

    committed = REPO / "results" / "care_dpo_pipeline"
    table = {row["seed"]: row for row in json.loads((committed / "preferences.json").read_text())["rows"]}
    summary = json.loads((committed / "summary_s0.json").read_text())
    (tmp_path / "s0.json").write_text(json.dumps(summary))
    plain = tmp_path / "store.jsonl"
    plain.write_bytes(gzip.decompress((committed / "preferences_s0.jsonl.gz").read_bytes()))
    out = tmp_path / "out"
    first = collect([tmp_path / "s0.json"], out, [plain])
    target = out / "preferences_s0.jsonl.gz"
    assert gzip.decompress(target.read_bytes()) == plain.read_bytes()
    counts = {k: table[0][k] for k in ("intra", "inter", "intra_ties", "inter_conflicts")}
    assert {k: first["preferences"][0][k] for k in counts} == counts
    again = collect([tmp_path / "s0.json"], out, [target])  # recollecting from the stores already in --out
    assert again["preferences"] == first["preferences"]
    packed = collect([tmp_path / "s0.json"], tmp_path / "out2", [committed / "preferences_s0.jsonl.gz"])
    assert (tmp_path / "out2" / "preferences_s0.jsonl.gz").read_bytes() == (
        committed / "preferences_s0.jsonl.gz").read_bytes() and packed["preferences"] == first["preferences"]


def test_timed_runs_table_the_wall_time_of_whole_runs_and_refuse_a_run_that_reused_stages(tmp_path: Path) -> None:
    from experiments.care_dpo.collect import timed_runs

    def summary(name: str, wall: float, skipped: list[str]) -> Path:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"seed": 2, "retrieval": {"sft-role": {}, "dgdpo-role": {}},
                                    "timings_s": {"sft": 100.4, "dgdpo": 50.0}, "wall_s": wall,
                                    "skipped_stages": skipped}))
        return path

    rows = timed_runs([f"default command={summary('core', 1650.0, [])}"], tmp_path / "out")
    assert rows == [{"run": "default command", "seed": 2, "retrievers": "sft-role, dgdpo-role", "stages_s": "150",
                     "wall_s": "1650", "wall_min": "27.5"}]
    assert json.loads((tmp_path / "out" / "timed_runs.json").read_text()) == {"seeds": "2", "rows": rows}
    assert (tmp_path / "out" / "timed_0_s2.json").is_file()
    with pytest.raises(ValueError, match="reused from an earlier run"):
        timed_runs([f"again={summary('again', 20.0, ['sft'])}"], tmp_path / "out")
    with pytest.raises(ValueError, match="LABEL=path"):
        timed_runs([str(summary("nolabel", 20.0, []))], tmp_path / "out")
