"""The README's leaderboard block (``experiments/tables/leaderboard_block.py``) on registered runs written from chosen
similarity matrices (``tests/registry_helpers.py``) on two configurations: metrics, ΔR@1 with its interval, the
"holds on both" verdict, the computed leakage, the flagged view, the cost columns and the missing cells."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest

from experiments.registry.register import Plan, register
from experiments.tables.cli import main as readme
from tests.registry_helpers import full_run, scores

METHODS = [{"name": "clip4clip_seqTransf", "display": "CLIP4Clip seqTransf", "flagged_views": []},
           {"name": "clip4clip_meanP", "display": "CLIP4Clip meanP", "flagged_views": []},
           {"name": "conical", "display": "Conical (bare query)", "flagged_views": ["paired"]}]
CONFS = ("default", "hard")
SEEDS = (0, 1)
LEAK = "paired/* view: test queries choose their own videos' supplements"


def costs(method: str, seed: int) -> dict[str, Any]:
    captions = {"per_video": 1, "generation_s": 55.0, "simulated": True} if method == "conical" else \
        {"per_video": 0, "generation_s": 0.0, "simulated": None}
    return {"trainable_params": 430_000 + seed, "train_step_ms": 10.0 + seed, "eval": {"ms_per_query": 0.5},
            "captions": captions, "wall_s": {"cell": 100.0 + 10 * seed, "captions": captions["generation_s"],
                                             "total": 100.0 + 10 * seed + captions["generation_s"]},
            "machine": {"cpus": 2, "load1_mean": 3.0 + seed, "state": "shared"}}


def matrix(method: str, conf: str, seed: int) -> tuple[np.ndarray, list[int]]:
    """seqTransf: noisy scores; meanP: every query right (better everywhere); conical: seqTransf's scores on the hard
    configuration (Δ = 0 there), right on the default one."""
    sim, gt = scores(40, 8, seed=seed)
    if method == "clip4clip_meanP" or (method == "conical" and conf == "default"):
        sim = np.zeros_like(sim)
        sim[np.arange(len(gt)), gt] = 1.0
    return sim, gt


def leaderboard(root: Path, failed: dict[tuple[str, str, int], str] | None = None) -> Path:
    """``results/leaderboard`` as ``collect`` writes it: every method x configuration x seed registered, except the
    ``failed`` cells (key -> reason)."""
    failed = failed or {}
    out = root / "results" / "leaderboard"
    cells = []
    for conf in CONFS:
        for m in METHODS:
            for seed in SEEDS:
                name = f"{m['name']}_s{seed}"
                reason = failed.get((conf, m["name"], seed))
                cells.append({"configuration": conf, "method": m["name"], "seed": seed, "cell": name,
                              "status": "failed" if reason else "done", "reason": reason})
                if reason:
                    continue
                sim, gt = matrix(m["name"], conf, seed)
                extra: dict[str, Any] = {"lineage": {"stage": "test"}, "leakage": []}
                views = None
                if m["name"] == "conical":
                    views = {"paired": matrix("clip4clip_meanP", conf, seed)[0]}
                    extra["leakage"] = [LEAK]
                run = full_run(root / "runs" / conf / name, sim, gt, seed=seed, views=views, **extra)
                dest = register(Plan(run, out / conf / name, PurePosixPath(run.resolve().as_posix())))
                (dest / "costs.json").write_text(json.dumps(costs(m["name"], seed)))
    summary = {"reference": "clip4clip_seqTransf", "seeds": list(SEEDS), "methods": METHODS,
               "configurations": [{"name": c, "data": {"fingerprint": f"fp-{c}", "content_sha256": "ab" * 32,
                                                       "files": 808, "generator": {"num_families": 200}}}
                                  for c in CONFS],
               "cells": cells, "settings": {"data": [], "args": []}}
    (out / "leaderboard.json").write_text(json.dumps(summary))
    return out


def render(root: Path) -> tuple[list[dict[str, str]], str]:
    readme_path = root / "README.md"
    readme_path.write_text("# x\n\n<!-- leaderboard-table: results/leaderboard -->\n<!-- /leaderboard-table -->\n")
    assert readme([str(readme_path), "--root", str(root)]) == 0
    text = readme_path.read_text()
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = [dict(zip(header, [c.strip() for c in line.strip("|").split(" | ")], strict=True)) for line in lines[2:]]
    assert readme([str(readme_path), "--check", "--root", str(root)]) == 0
    return rows, text


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, str]], str]:
    root = tmp_path_factory.mktemp("leaderboard")
    leaderboard(root, failed={("hard", "clip4clip_meanP", 1): "cell hard/clip4clip_meanP_s1: its command exited with "
                                                               "1"})
    return render(root)


def _row(rows: list[dict[str, str]], method: str, conf: str) -> dict[str, str]:
    (row,) = [r for r in rows if r["method"] == method and r["SynthVTR"] == conf]
    return row


def test_metrics_delta_and_verdicts(table: tuple[list[dict[str, str]], str]) -> None:
    rows, _ = table
    assert [(r["method"], r["SynthVTR"]) for r in rows] == [(m["display"], c) for m in METHODS for c in CONFS]
    ref = _row(rows, "CLIP4Clip seqTransf", "default")
    assert ref["ΔR@1 vs CLIP4Clip seqTransf [95 % CI]"] == "reference" and ref["holds on both"] == "reference"
    meanp = _row(rows, "CLIP4Clip meanP", "default")
    assert meanp["T2V R@1"] == "100.00 ± 0.00" and meanp["seeds"] == "0,1"
    assert re.fullmatch(r"\+\d+\.\d\d \[\+\d+\.\d\d, \+\d+\.\d\d\] \(2 seed pairs\)",
                        meanp["ΔR@1 vs CLIP4Clip seqTransf [95 % CI]"])
    assert meanp["holds on both"] == "holds on both (the method better)"
    assert _row(rows, "CLIP4Clip meanP", "hard")["seeds"] == "0"  # seed 1 failed
    conical_hard = _row(rows, "Conical (bare query)", "hard")
    assert conical_hard["ΔR@1 vs CLIP4Clip seqTransf [95 % CI]"] == "+0.00 [+0.00, +0.00] (2 seed pairs)"
    assert conical_hard["holds on both"] == "does not hold on both: the interval includes 0 on hard"


def test_leakage_flagged_view_and_costs(table: tuple[list[dict[str, str]], str]) -> None:
    rows, text = table
    conical = _row(rows, "Conical (bare query)", "hard")
    assert conical["leakage (computed)"] == LEAK
    assert conical["⚑ flagged view: T2V R@1"] == "⚑ paired: 100.00 ± 0.00"
    assert _row(rows, "CLIP4Clip meanP", "hard")["leakage (computed)"] == "none"
    assert _row(rows, "CLIP4Clip meanP", "hard")["⚑ flagged view: T2V R@1"] == ""
    assert conical["trainable params"] == "0.43 M"
    assert conical["train step (ms)"] == "10.5"                    # median over the two seeds
    assert conical["eval / query, 1k videos (ms)"] == "0.5"
    assert conical["captions / video (generation)"] == "1 (simulated, 55 s)"
    assert conical["wall (cell + captions)"] == "2.7 min (105 s + captions)"
    assert conical["machine during the cells"] == "shared, load 3.0–4.0 on 2 CPUs"
    assert _row(rows, "CLIP4Clip meanP", "default")["captions / video (generation)"] == "none"
    assert "Missing 1 of 12 cells: 1 failed (cell hard/clip4clip_meanP_s1: its command exited with 1) (hard: " \
           "clip4clip_meanP seed 1)." in " ".join(text.split())
    assert "11 of 12 cells registered" in text and "default `fp-default`" in text


def test_errors_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme_path = tmp_path / "README.md"
    readme_path.write_text("<!-- leaderboard-table: results/leaderboard -->\n<!-- /leaderboard-table -->\n")
    assert readme([str(readme_path)]) == 2
    assert "leaderboard.json is missing; `python -m experiments.leaderboard collect`" in capsys.readouterr().err
    out = leaderboard(tmp_path, failed={(c, m["name"], s): "x" for c in CONFS for m in METHODS[1:] for s in SEEDS})
    stray = out / "default" / "clip4clip_seqTransf_s0"
    stray.rename(out / "default" / "someone_elses_run")
    assert readme([str(readme_path)]) == 2
    assert "someone_elses_run is no cell of the leaderboard" in capsys.readouterr().err
    (out / "default" / "someone_elses_run").rename(stray)
    (stray / "costs.json").unlink()
    assert readme([str(readme_path)]) == 2
    assert f"{stray / 'costs.json'} is missing" in capsys.readouterr().err
