"""The report on two SynthVTR configurations (a tiny default-like one and a tiny hard one, real CLI runs): the
"Robustness" section, then ``--wandb`` on the same runs (offline, into a temporary WANDB_DIR)."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from experiments.report import main as report
from experiments.report.robustness import Configuration, verdict
from experiments.report.stats import Comparison, Interval
from main import main
from tests.experiments.test_report import table
from tests.run_helpers import TINY_CLIP4CLIP, csv_logger

LOADER = {"video_dir": "videos", "video_size": 32, "video_frames": 16, "num_frames": 4, "image_size": 64,
          "batch_size": 4, "eval_batch_size": 3, "num_workers": 0, "generator_workers": 1, "train_sampling": "uniform"}
# both: 6 test videos, 30 queries; the second has larger families, one-aspect captions (half one-sided), seed 1
CONFIGS = {"default": {"num_families": 6, "family_size": 2, "test_families": 3, "val_families": 1},
           "hard": {"num_families": 5, "family_size": 3, "test_families": 2, "val_families": 1, "detail": 1,
                    "one_sided_fraction": 0.5, "generator_seed": 1}}
HEADERS = ("meanP", "seqTransf")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CLIP4Clip meanP and seqTransf (seed 0, one epoch) on each configuration: four groups, two per configuration."""
    out = tmp_path_factory.mktemp("robust_runs")
    data = tmp_path_factory.mktemp("robust_data")
    for name, knobs in CONFIGS.items():
        config = data / f"synthvtr_{name}.yaml"
        config.write_text(yaml.safe_dump({"data": {"class_path": "SynthVTR",
                                                   "init_args": {"root": str(data), **LOADER, **knobs}}}))
        for header in HEADERS:
            main(["fit", "--config", str(TINY_CLIP4CLIP), "--config", str(config), "--model.init_args.sim_header",
                  header, "--trainer.max_epochs", "1", "--trainer.logger", csv_logger(out, f"{name}_{header}")])
    return out


def _records(runs: Path) -> dict[str, dict[str, Any]]:
    return {p.parents[2].name: json.loads(p.read_text()) for p in runs.rglob("test/metrics.json")}


def _robustness(md: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The configurations table and the pairs table of the Robustness section."""
    body = md.split("## Robustness", 1)[1].split("\n## ", 1)[0]
    return table(md, "Robustness"), table("## pairs\n" + body[body.index("| A |"):], "pairs")


def test_robustness_section_lists_each_configuration_and_the_pair(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    report([str(runs), "--out", str(out), "--resamples", "500", "--no-thumbnails"])
    md = (out / "report.md").read_text()
    confs, pairs = _robustness(md)
    records = _records(runs)
    fingerprints = {n: records[f"{n}_meanP"]["data"]["generator"]["fingerprint"] for n in CONFIGS}
    assert fingerprints["default"] != fingerprints["hard"]
    assert [c["configuration"] for c in confs] == ["C1", "C2"]
    by_fp = {c["generator"].split("`")[1]: c for c in confs}
    assert set(by_fp) == set(fingerprints.values())
    hard = by_fp[fingerprints["hard"]]
    assert "5 families of 3" in hard["generator"] and "one-sided 0.5" in hard["generator"]
    assert hard["oracle T2V R@1"] == f"{records['hard_meanP']['data']['oracle']['R@1']:.1f}"
    (pair,) = pairs
    assert pair["A"].startswith("CLIP4Clip meanP (") and pair["B"].startswith("CLIP4Clip seqTransf (")
    # each cell is the pooled interval of that configuration's own paired comparison
    pooled = {r["A"].split()[0]: r["pooled ΔR@1 [95 % CI]"] for r in table(md, "Paired comparison (bootstrap over "
                                                                            "queries)")}
    conf_groups = {c["configuration"]: c["groups"].split(", ") for c in confs}
    for conf, members in conf_groups.items():
        a = next(g for g in members if g in pair["A"])
        cell = pair[f"ΔR@1 on {conf} [95 % CI]"]
        assert cell == f"{pooled[a]} (1 seed pair(s))"
    lows_highs = [[float(x) for x in pair[f"ΔR@1 on {c} [95 % CI]"].split("[")[1].split("]")[0].split(", ")]
                  for c in ("C1", "C2")]
    holds = all(lo > 0 for lo, _ in lows_highs) or all(hi < 0 for _, hi in lows_highs)
    assert pair["verdict"].startswith("holds on both" if holds else "does not hold on both: ")


def _set_scores(run: Path, perfect: bool, like: Path | None = None) -> None:
    """Overwrite a run's sim_t2v.npy: the ground truth first for every query, or a copy of another run's."""
    test = run / "version_0" / "test"
    if like is not None:
        shutil.copy(like / "version_0" / "test" / "sim_t2v.npy", test / "sim_t2v.npy")
        return
    sim = np.load(test / "sim_t2v.npy")
    gt = json.loads((test / "text_to_video.json").read_text())
    if perfect:
        sim = np.zeros_like(sim)
        sim[np.arange(len(gt)), gt] = 1.0
    np.save(test / "sim_t2v.npy", sim)


@pytest.mark.parametrize("case", ["holds", "sign", "zero"])
def test_verdict_on_edited_scores(runs: Path, tmp_path: Path, case: str) -> None:
    """meanP made perfect on both configurations holds on both; perfect on one and seqTransf perfect on the other
    flips the sign; equal scores on one configuration leave an interval around 0 there."""
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    if case == "holds":
        _set_scores(copy / "default_meanP", True)
        _set_scores(copy / "hard_meanP", True)
    elif case == "sign":
        _set_scores(copy / "default_meanP", True)
        _set_scores(copy / "hard_seqTransf", True)
    else:
        _set_scores(copy / "default_meanP", True)
        _set_scores(copy / "hard_meanP", False, like=copy / "hard_seqTransf")
    out = tmp_path / "rep"
    report([str(copy), "--out", str(out), "--resamples", "500", "--no-thumbnails"])
    confs, (pair,) = _robustness((out / "report.md").read_text())
    hard = next(c["configuration"] for c in confs if "one-sided 0.5" in c["generator"])
    if case == "holds":
        assert pair["verdict"] == "holds on both (A better)"
    elif case == "sign":
        assert pair["verdict"].startswith("does not hold on both: the sign of Δ differs (")
        assert f"on {hard}" in pair["verdict"]
    else:
        assert pair["verdict"] == f"does not hold on both: the interval includes 0 on {hard}"
        assert pair[f"ΔR@1 on {hard} [95 % CI]"].startswith("+0.00 [+0.00, +0.00]")


def test_other_code_version_is_kept_apart_unless_merge_commits(runs: Path, tmp_path: Path) -> None:
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    for path in copy.glob("hard_*/version_0/test/metrics.json"):
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "git_sha": "0123456789abcdef"}))
    out = tmp_path / "rep"
    report([str(copy), "--out", str(out), "--resamples", "200", "--no-thumbnails"])
    body = (out / "report.md").read_text().split("## Robustness", 1)[1].split("\n## ", 1)[0]
    assert "| A |" not in body and "pass `--merge-commits` to compare them" in body
    report([str(copy), "--out", str(out), "--resamples", "200", "--no-thumbnails", "--merge-commits"])
    _, pairs = _robustness((out / "report.md").read_text())
    assert len(pairs) == 1


def _comparison(delta: float, low: float, high: float) -> Comparison:
    return Comparison(None, None, [0], [], Interval(delta, low, high, 100), 30)  # type: ignore[arg-type]


def test_verdict_rules() -> None:
    c1, c2, c3 = Configuration("a", "C1"), Configuration("b", "C2"), Configuration("c", "C3")
    assert verdict("A", "B", [(c1, _comparison(3, 1, 5)), (c2, _comparison(2, 0.5, 4))]) == "holds on both (A better)"
    assert verdict("A", "B", [(c1, _comparison(-3, -5, -1)), (c2, _comparison(-2, -4, -0.1)),
                              (c3, _comparison(-1, -2, -0.5))]) == "holds on all 3 (B better)"
    assert verdict("A", "B", [(c1, _comparison(3, 1, 5)), (c2, _comparison(1, -1, 3))]) == (
        "does not hold on both: the interval includes 0 on C2")
    assert verdict("A", "B", [(c1, _comparison(3, 1, 5)), (c2, _comparison(0, 0, 0))]) == (
        "does not hold on both: the interval includes 0 on C2")
    assert verdict("A", "B", [(c1, _comparison(3, 1, 5)), (c2, _comparison(-1, -3, 1))]) == (
        "does not hold on both: the sign of Δ differs (+3.00 on C1, -1.00 on C2); the interval includes 0 on C2")
    assert verdict("A", "B", [(c1, _comparison(3, 1, 5)), (c2, _comparison(-2, -4, -1))]) == (
        "does not hold on both: the sign of Δ differs (+3.00 on C1, -2.00 on C2); the intervals exclude 0 on "
        "opposite sides")


# ---------------------------------------------------------------- --wandb
def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of an offline run's ``run-*.wandb`` file (LevelDB log format: 7-byte W&B header,
    32 KiB blocks of chunks with a 7-byte header: crc32, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B"
    chunks: list[bytes] = []
    pending = b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # block padding
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            chunks.append(pending + chunk)
    records = []
    for chunk in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        records.append(record)
    return records


def test_wandb_logs_tables_per_query_results_and_the_report_artifact(runs: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for var, sub in (("WANDB_DIR", "wandb_dir"), ("WANDB_DATA_DIR", "wandb_data"), ("WANDB_CACHE_DIR", "cache"),
                     ("WANDB_CONFIG_DIR", "config")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "rep"
    report([str(runs), "--out", str(out), "--resamples", "300", "--queries", "2", "--wandb"])
    (run_dir,) = (tmp_path / "wandb_dir" / "wandb").glob("offline-run-*")
    names = {p: re.fullmatch(r"(.+)_(\d+)_[0-9a-f]+\.table\.json", p.name) for p in
             (run_dir / "files" / "media" / "table").iterdir()}
    assert all(names.values()), names  # <key>_<step>_<hash>.table.json
    tables = {m.group(1): json.loads(p.read_text()) for p, m in names.items() if m}
    assert {"main_table", "paired_comparison", "robustness", "per_query"} <= set(tables)
    main_table = tables["main_table"]
    assert main_table["columns"][:3] == ["group", "method", "dataset"] and len(main_table["data"]) == 4
    md_rows = table((out / "report.md").read_text(), "Main table")
    assert [r[0] for r in main_table["data"]] == [r["group"] for r in md_rows]
    assert [r[5] for r in main_table["data"]] == [r["T2V R@1"] for r in md_rows]
    assert len(tables["paired_comparison"]["data"]) == 2 and tables["robustness"]["columns"][0] == "configuration"
    per_query = tables["per_query"]
    assert per_query["columns"] == ["group", "method", "dataset", "seed", "run", "query_id", "query_text",
                                    "gt_video_id", "gt_rank", "top5_video_ids"]
    assert len(per_query["data"]) == 4 * 30  # 4 runs x 30 test queries
    for row in per_query["data"]:
        group, text, gt_video, rank, top5 = row[0], row[6], row[7], row[8], row[9].split(", ")
        assert text and text.strip() and gt_video.startswith("synth") and len(top5) == 5
        assert (rank == 1) == (top5[0] == gt_video) and 1 <= rank <= 6 and group.startswith("G")
    # ranks agree with the run's own matrix
    run = Path(per_query["data"][0][4])
    sim = np.load(run / "test" / "sim_t2v.npy")
    gt = json.loads((run / "test" / "text_to_video.json").read_text())
    ranks = (sim >= sim[np.arange(len(gt)), gt][:, None]).sum(axis=1)
    assert [r[8] for r in per_query["data"] if r[4] == str(run)] == ranks.tolist()
    # the report folder as an artifact of type "report", in the run's transaction log
    (log,) = run_dir.glob("run-*.wandb")
    artifacts = [r.artifact for r in wandb_records(log) if r.WhichOneof("record_type") == "artifact"]
    (artifact,) = [a for a in artifacts if a.type == "report"]
    assert artifact.name == "report-rep"
    paths = {e.path for e in artifact.manifest.contents}
    assert {"report.md", "index.html"} <= paths
    assert any(p.startswith("plots/") for p in paths) and any(p.startswith("thumbs/") for p in paths)
    expected = {f"plots/{p.name}" for p in (out / "plots").iterdir()} | {
        f"thumbs/{p.name}" for p in (out / "thumbs").iterdir()}
    assert expected <= paths
