"""bf16-mixed on CPU: CLIP4Clip and NarVid fit -> test without dtype errors, and the bf16-trained checkpoint
scores the same in a float32 re-test (evaluation scoring is always float32)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from main import main
from tests.run_helpers import TINY_CLIP4CLIP as CONF
from tests.run_helpers import csv_logger, narvid_args


def _args(method: str, root: Path, out: Path) -> list[str]:
    if method == "NarVid":
        return narvid_args(root, out, "bf16")
    return ["fit", "--config", str(CONF), "--data.init_args.root", str(root), "--trainer.max_epochs", "1",
            "--trainer.logger", csv_logger(out, "bf16")]


@pytest.mark.parametrize("method", ["CLIP4Clip", "NarVid"])
def test_bf16_mixed_fit_test_on_cpu_matches_float32_retest(method: str, narrated_msrvtt: Path,
                                                          tmp_path: Path) -> None:
    cli = main([*_args(method, narrated_msrvtt, tmp_path), "--trainer.precision", "bf16-mixed"])
    run = Path(cli.trainer.log_dir)
    record = json.loads((run / "test" / "metrics.json").read_text())
    assert record["precision"] == "bf16-mixed" and record["num_texts"] == 6
    sim_bf16 = np.load(run / "test" / "sim_t2v.npy")
    assert sim_bf16.dtype == np.float32 and np.isfinite(sim_bf16).all()
    best = cli.trainer.checkpoint_callback.best_model_path
    args = _args(method, narrated_msrvtt, tmp_path / "fp32")
    args[0] = "test"
    retest = main([*args, "--ckpt_path", best, "--trainer.precision", "32-true"])
    fp32_dir = Path(retest.trainer.log_dir) / "test"
    fp32 = json.loads((fp32_dir / "metrics.json").read_text())
    assert fp32["precision"] == "32-true"
    sim_fp32 = np.load(fp32_dir / "sim_t2v.npy")
    # same weights, encoders in bf16 vs float32: the score matrices agree up to bf16 rounding (relative to
    # the spread of a barely trained tiny model's scores, which NarVid's z-fusion divides by), R@1 too
    correlation = np.corrcoef(sim_bf16.ravel(), sim_fp32.ravel())[0, 1]
    assert correlation > 0.95, correlation
    # R@1 within 0.5 needs a test set where one query is worth less than 0.5 points and a model whose ground
    # truth is not tied with its competitors: benchmarks/precision.py measures that on SynthVTR (800 queries).
    # Here 6 queries, a barely trained random tiny CLIP and (NarVid) a nucleus filter whose frame selection can
    # change on a bf16 rounding: R@1 itself moves by whole queries on near ties (CI once saw 2 of 6 flip). What
    # must hold is that the ground truth's rank barely moves: a flip on a near tie moves it by one place, a
    # broken bf16 path (a scrambled matrix) by about two on average over 6 videos.
    gt = np.asarray(json.loads((fp32_dir / "text_to_video.json").read_text()))
    rows = np.arange(len(gt))

    def gt_rank(sim: np.ndarray) -> np.ndarray:
        return (sim > sim[rows, gt][:, None]).sum(axis=1)

    assert np.abs(gt_rank(sim_bf16) - gt_rank(sim_fp32)).mean() <= 1.0, (gt_rank(sim_bf16), gt_rank(sim_fp32))
