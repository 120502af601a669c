"""Exact resume: a run SIGKILLed at an epoch boundary, resumed, SIGKILLed again mid-epoch (after a step
checkpoint) and resumed again ends bit-identical to an uninterrupted run, in the same run directory."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_modules.safe_load import EXTRA_PACKAGES_ENV
from main import main
from tests.run_helpers import REPO
from tests.run_helpers import TINY_CLIP4CLIP as CONF

STEPS_PER_EPOCH = 9  # 12 training videos x 3 captions, batch 4


def _args(root: Path, runs: Path, *, workers: int, pause: tuple[int, Path] | None = None,
          final_weights: Path | None = None, resume: Path | None = None) -> list[str]:
    logger = [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(runs), "name": "r"}}]
    args = ["fit", "--config", str(CONF), "--data.init_args.root", str(root),
            "--model.class_path", "tests.resume_helpers.DropoutCLIP4Clip",
            "--data.init_args.num_workers", str(workers), "--trainer.enable_progress_bar", "false",
            "--trainer.logger", json.dumps(logger), "--checkpoint_every_n_train_steps", "4"]
    if pause is not None:
        args += ["--trainer.callbacks+=tests.resume_helpers.PauseAtStep", f"--trainer.callbacks.step={pause[0]}",
                 f"--trainer.callbacks.marker={pause[1]}"]
    if final_weights is not None:
        args += ["--trainer.callbacks+=tests.resume_helpers.SaveFinalWeights",
                 f"--trainer.callbacks.path={final_weights}"]
    if resume is not None:
        args += ["--ckpt_path", str(resume)]
    return args


def _start(args: list[str]) -> subprocess.Popen:
    # the model and callbacks of tests/resume_helpers.py: the checkpoints name them, so their package is allowed
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", EXTRA_PACKAGES_ENV: "tests",
           "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "main.py", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _kill_when_paused(proc: subprocess.Popen, marker: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if proc.poll() is not None or not marker.exists():
        proc.kill()
        pytest.fail("the run did not reach its pause point:\n" + (proc.stdout.read() if proc.stdout else ""))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _last_checkpoint(run_dir: Path) -> dict:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    loader = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    return {"global_step": ckpt["global_step"], "epoch": ckpt["epoch"], "loader": loader}


def _csv_rows(run_dir: Path) -> list[tuple]:
    """Every logged value as (epoch, step, key, value), timing columns left out."""
    with (run_dir / "metrics.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return sorted((r["epoch"], r["step"], k, v) for r in rows for k, v in r.items()
                  if v and k not in ("epoch", "step") and not k.endswith("eval_seconds"))


def test_sigkill_at_epoch_end_and_mid_epoch_then_resume_equals_uninterrupted(fake_msrvtt: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    # the uninterrupted run, beside the killed ones (2 cores); it reads frames in the main process, the others
    # in 2 workers: the data must not depend on that either
    straight = _start(_args(fake_msrvtt, tmp_path / "straight", workers=0, final_weights=tmp_path / "straight.pt"))
    runs = tmp_path / "resumed"
    run_dir = runs / "r" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"

    # 1) killed right after the end-of-epoch-0 checkpoint (validation done, epoch 1 not started)
    _kill_when_paused(_start(_args(fake_msrvtt, runs, workers=2, pause=(STEPS_PER_EPOCH, tmp_path / "p1"))),
                      tmp_path / "p1")
    state = _last_checkpoint(run_dir)
    assert state["global_step"] == STEPS_PER_EPOCH and state["loader"]["epoch_done"]

    # 2) resumed, then killed mid-epoch 1: the last checkpoint is the step checkpoint after 12 steps
    _kill_when_paused(_start(_args(fake_msrvtt, runs, workers=2, pause=(14, tmp_path / "p2"), resume=last)),
                      tmp_path / "p2")
    state = _last_checkpoint(run_dir)
    assert state["global_step"] == 12 and state["epoch"] == 1
    assert state["loader"]["batches_done"] == 12 - STEPS_PER_EPOCH and not state["loader"]["epoch_done"]
    assert not (runs / "r" / "version_1").exists(), "the resumed run must reuse the checkpoint's run directory"

    # 3) resumed to the end (in-process: saves the import time)
    monkeypatch.setenv(EXTRA_PACKAGES_ENV, "tests")  # as in _start: the checkpoint names tests.resume_helpers' model
    cli = main(_args(fake_msrvtt, runs, workers=2, final_weights=tmp_path / "resumed.pt", resume=last))
    assert Path(cli.trainer.log_dir) == run_dir
    output, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, output
    reference = tmp_path / "straight" / "r" / "version_0"

    ref = json.loads((reference / "test" / "metrics.json").read_text())
    got = json.loads((run_dir / "test" / "metrics.json").read_text())
    ref["metrics"].pop("eval_seconds")
    got["metrics"].pop("eval_seconds")
    assert got["metrics"] == ref["metrics"]
    assert Path(got["ckpt_path"]).name == Path(ref["ckpt_path"]).name  # the same best epoch was tested
    assert Path(got["ckpt_path"]).parent == run_dir / "checkpoints"
    assert np.array_equal(np.load(run_dir / "test" / "sim_t2v.npy"), np.load(reference / "test" / "sim_t2v.npy"))
    # every step's loss and every validation, once each: the rows logged before each kill were kept
    assert _csv_rows(run_dir) == _csv_rows(reference)
    final = torch.load(tmp_path / "resumed.pt", weights_only=True)
    expected = torch.load(tmp_path / "straight.pt", weights_only=True)
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in expected), "final weights differ"
