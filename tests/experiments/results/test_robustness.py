"""The report on two SynthVTR configurations (a tiny default-like one and a tiny hard one, real CLI runs): the
"Robustness" section, then ``--wandb`` on the same runs (offline, into a temporary WANDB_DIR)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from experiments.report import main as report
from experiments.results.robustness import Configuration, verdict
from experiments.results.stats import Comparison, Interval
from tests.experiments.conftest import CONFIGS
from tests.report_helpers import table


@pytest.fixture
def runs(synthvtr_runs: Path) -> Path:
    """CLIP4Clip meanP and seqTransf (seed 0) on a default-like and a hard SynthVTR configuration (conftest)."""
    return synthvtr_runs

# both: 6 test videos, 30 queries; the second has larger families, one-aspect captions (half one-sided), seed 1


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


