"""callbacks.exact_resume: RNG states through a checkpoint, the resume info read ahead, the loggers pointed at the
checkpoint's run. The whole kill-and-resume run is end-to-end, in tests/test_resume.py."""

from __future__ import annotations

import io
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from callbacks.exact_resume import (
    ExactResume,
    capture_rng_state,
    keep_csv_rows_before,
    read_resume_info,
    restore_rng_state,
    resume_logger_overrides,
    run_dir_of_checkpoint,
)


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_restored_rng_states_repeat_every_generator_and_survive_a_weights_only_load() -> None:
    state = capture_rng_state()
    expected = _draws()
    buffer = io.BytesIO()
    torch.save({"rng": [state]}, buffer)  # as the callback's state goes into a checkpoint
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["rng"][0]
    _draws()
    restore_rng_state(loaded)
    assert _draws() == expected


def test_the_callback_restores_its_rank_state_at_train_start_and_only_for_the_same_world_size() -> None:
    callback = ExactResume()
    callback.load_state_dict({"rng": [capture_rng_state()], "loggers": []})
    expected = _draws()
    callback.on_train_start(SimpleNamespace(world_size=1, global_rank=0), None)  # type: ignore[arg-type]
    assert _draws() == expected
    callback.load_state_dict({"rng": [capture_rng_state(), capture_rng_state()], "loggers": []})
    first = _draws()
    callback.on_train_start(SimpleNamespace(world_size=1, global_rank=0), None)  # type: ignore[arg-type]
    assert _draws() != first  # two ranks' states, one rank now: nothing restored
    assert callback.state_dict()["loggers"] == [] and len(callback.state_dict()["rng"]) == 1


def test_resume_info_of_a_checkpoint_and_of_an_unreadable_file(tmp_path: Path) -> None:
    ckpt = tmp_path / "last.ckpt"
    loggers = [{"class": "CSVLogger", "name": "r", "version": 2}]
    torch.save({"global_step": 18, "callbacks": {"ExactResume": {"rng": [], "loggers": loggers}}}, ckpt)
    assert read_resume_info(ckpt) == {"global_step": 18, "loggers": loggers}
    (tmp_path / "torn.ckpt").write_bytes(b"not a checkpoint")
    assert read_resume_info(tmp_path / "torn.ckpt") == {"global_step": None, "loggers": []}


def test_run_dir_of_a_checkpoint_only_under_checkpoints(tmp_path: Path) -> None:
    run = tmp_path / "r" / "version_1"
    assert run_dir_of_checkpoint(run / "checkpoints" / "x.ckpt") == run
    assert run_dir_of_checkpoint(tmp_path / "x.ckpt") is None


def test_resume_points_loggers_at_the_checkpoint_run(tmp_path: Path):
    ckpt = tmp_path / "runs" / "exp" / "version_3" / "checkpoints" / "last.ckpt"
    csv_args = {"save_dir": str(tmp_path / "runs"), "name": "exp", "version": None}
    loggers = [("CSVLogger", csv_args), ("WandbLogger", {"id": None, "version": None}),
               ("MLFlowLogger", {"run_id": None}), ("TensorBoardLogger", {"save_dir": "tb", "version": 7})]
    recorded = {"loggers": [{"class": "CSVLogger", "version": 3}, {"class": "WandbLogger", "version": "abc123"}]}
    assert resume_logger_overrides(loggers, ckpt, recorded) == [{"version": 3}, {"id": "abc123"}, {}, {}]
    # a checkpoint without recorded versions: the CSV run directory comes from the checkpoint's path
    assert resume_logger_overrides(loggers, ckpt, {"loggers": []}) == [{"version": "version_3"}, {}, {}, {}]
    elsewhere = tmp_path / "moved" / "last.ckpt"
    assert resume_logger_overrides(loggers, elsewhere, {"loggers": []}) == [{}, {}, {}, {}]


def test_csv_rows_before_the_checkpoint_step_are_carried_into_the_resumed_run(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name="r", version=0)
    Path(logger.log_dir).mkdir(parents=True)
    (Path(logger.log_dir) / "metrics.csv").write_text(
        "epoch,step,train/loss\n" + "".join(f"0,{step},{step / 10}\n" for step in range(6)))
    assert keep_csv_rows_before(logger, 3) == 3
    lines = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in lines[1:]] == ["0", "1", "2"]
    assert keep_csv_rows_before(CSVLogger(tmp_path, name="new", version=0), 3) == 0  # nothing logged there yet
