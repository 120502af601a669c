"""Two CPU processes (gloo): the gathered loss and gradients equal the single-process global batch, and
evaluation de-duplicates DistributedSampler padding to the split's exact counts. With ``on_decode_error:
skip``, ranks holding different numbers of videos still compute the global loss, and a rank whose whole
batch failed to decode does not stall the others."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datamodules.sampling import ResumableSampler
from lightning_modules.safe_load import EXTRA_PACKAGES_ENV
from tests.conftest import make_fake_msrvtt
from tests.ddp_helpers import items_of_rank, run_one_step
from tests.run_helpers import REPO, TINY_CLIP4CLIP

pytestmark = pytest.mark.slow


def test_ddp_loss_and_gradients_match_single_process(tmp_path: Path) -> None:
    run_one_step(str(tmp_path), devices=1)
    run_one_step(str(tmp_path), devices=2)
    single = torch.load(tmp_path / "rank0_ws1.pt")
    ranks = [torch.load(tmp_path / f"rank{r}_ws2.pt") for r in range(2)]
    for rank in ranks:
        assert rank["loss"].item() == pytest.approx(single["loss"].item(), abs=1e-5)
        assert rank["grads"].keys() == single["grads"].keys()
        for name, grad in single["grads"].items():
            torch.testing.assert_close(rank["grads"][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_ddp_excae_top2_routing_loss_and_gradients_match_single_process(tmp_path: Path) -> None:
    # experts no sample of a rank is routed to get no gradient there: DDP must allow unused parameters, and the
    # averaged gradients still equal the single process's on the global batch
    run_one_step(str(tmp_path), devices=1, method="excae")
    run_one_step(str(tmp_path), devices=2, method="excae")
    single = torch.load(tmp_path / "rank0_ws1.pt")
    ranks = [torch.load(tmp_path / f"rank{r}_ws2.pt") for r in range(2)]
    assert any(name.startswith("moe.experts") for name in single["grads"])
    for rank in ranks:
        assert rank["loss"].item() == pytest.approx(single["loss"].item(), abs=1e-5)
        for name, grad in single["grads"].items():
            other = rank["grads"].get(name, torch.zeros_like(grad))  # DDP leaves an expert no rank used at None
            torch.testing.assert_close(other, grad, atol=1e-5, rtol=1e-4, msg=name)


def test_ddp_conical_three_terms_loss_and_gradients_match_single_process(tmp_path: Path) -> None:
    # text, video and augmented copies are all gathered with gradients: L_tv, L_ta and L_va of the global batch
    run_one_step(str(tmp_path), devices=1, method="conical")
    run_one_step(str(tmp_path), devices=2, method="conical")
    single = torch.load(tmp_path / "rank0_ws1.pt")
    ranks = [torch.load(tmp_path / f"rank{r}_ws2.pt") for r in range(2)]
    assert {"logit_scale", "logit_scale_ta", "logit_scale_va", "gate.proj.weight"} <= set(single["grads"])
    for rank in ranks:
        assert rank["loss"].item() == pytest.approx(single["loss"].item(), abs=1e-5)
        assert rank["grads"].keys() == single["grads"].keys()
        for name, grad in single["grads"].items():
            torch.testing.assert_close(rank["grads"][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_ddp_evaluation_counts_are_exact(tmp_path: Path) -> None:
    from main import main

    root = make_fake_msrvtt(tmp_path / "data", num_train=8, num_test=5)  # 5 is odd: the sampler pads
    logger = json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                          "init_args": {"save_dir": str(tmp_path / "runs"), "name": "ddp"}}])
    conf = TINY_CLIP4CLIP
    main(["fit", "--config", str(conf), "--data.init_args.root", str(root), "--trainer.devices", "2",
          "--trainer.strategy", "ddp_spawn", "--trainer.max_epochs", "1", "--data.init_args.test_protocol",
          "all_captions", "--trainer.logger", logger])
    record = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    assert record["num_texts"] == 15 and record["num_videos"] == 5 and record["complete"]
    assert record["world_size"] == 2


def test_ddp_uneven_batches_match_single_process_of_surviving_items(tmp_path: Path) -> None:
    failed = frozenset(items_of_rank(1)[:1])  # one of rank 1's items fails: it trains on 3 rows, rank 0 on 4
    run_one_step(str(tmp_path), devices=1, failed=failed)
    run_one_step(str(tmp_path), devices=2, failed=failed)
    single = torch.load(tmp_path / "rank0_ws1.pt")
    ranks = [torch.load(tmp_path / f"rank{r}_ws2.pt") for r in range(2)]
    assert single["rows"] == 7 and [r["rows"] for r in ranks] == [4, 3]
    for rank in ranks:
        assert rank["loss"].item() == pytest.approx(single["loss"].item(), abs=1e-5)
        assert rank["grads"].keys() == single["grads"].keys()
        for name, grad in single["grads"].items():
            torch.testing.assert_close(rank["grads"][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_ddp_rank_with_empty_batch_skips_the_step_on_every_rank(tmp_path: Path) -> None:
    run_one_step(str(tmp_path), devices=2, failed=frozenset(items_of_rank(1)))  # all of rank 1's items fail
    ranks = [torch.load(tmp_path / f"rank{r}_ws2.pt") for r in range(2)]
    assert [r["rows"] for r in ranks] == [4, 0]
    assert all(r["loss"] == 0 and not r["grads"] for r in ranks)  # no parameter got a gradient: no update


def _corrupt_first_batch_of_rank(root: Path, rank: int, world_size: int, batch_size: int) -> list[str]:
    """Overwrite the video files of ``rank``'s first training batch with bytes no decoder reads."""
    train_ids = [f"video{i}" for i in range(12)]  # make_fake_msrvtt: one item per video (one caption each)
    sampler = ResumableSampler(train_ids, num_replicas=world_size, rank=rank, seed=0)  # type: ignore[arg-type]
    victims = [train_ids[key.index] for key in list(sampler)[:batch_size]]
    for video_id in victims:
        (root / "videos" / "all" / f"{video_id}.mp4").write_bytes(b"not a video " * 64)
    return victims


def test_ddp_whole_rank_batch_failing_to_decode_finishes_and_is_counted(tmp_path: Path) -> None:
    root = make_fake_msrvtt(tmp_path / "data")
    victims = _corrupt_first_batch_of_rank(root, rank=1, world_size=2, batch_size=2)
    logger = json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                          "init_args": {"save_dir": str(tmp_path / "runs"), "name": "skip"}}])
    conf = TINY_CLIP4CLIP
    args = ["fit", "--config", str(conf), "--data.init_args.root", str(root), "--trainer.devices", "2",
            "--trainer.strategy", "ddp_spawn", "--trainer.max_epochs", "1", "--trainer.logger", logger,
            "--data.init_args.on_decode_error", "skip", "--data.init_args.one_caption_per_video", "true",
            "--data.init_args.batch_size", "2", "--trainer.enable_progress_bar", "false"]
    repo = REPO
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(repo)}
    try:  # a stalled collective would wait forever: the subprocess gets a deadline
        done = subprocess.run([sys.executable, "main.py", *args], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=300)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"DDP run with an all-failed rank batch stalled:\n{exc.stdout}\n{exc.stderr}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    # under ddp_spawn the final test opens its own logger version: find each file where it is
    record = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    run_dir = next((tmp_path / "runs").rglob("checkpoints")).parent
    assert record["world_size"] == 2
    assert record["data"]["train_decode_failures"] == len(victims) == 2  # seen by rank 1, reported by rank 0
    assert sorted(record["data"]["train_failed_video_ids"]) == sorted(victims)
    with (run_dir / "metrics.csv").open(newline="") as fh:
        counted = [float(r["train/num_videos_failed"]) for r in csv.DictReader(fh) if r.get("train/num_videos_failed")]
    assert counted == [2.0]  # the epoch's sum over both ranks


def test_ddp_crash_mid_epoch_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """Two ranks, each with its own shard, data position and RNG stream, resumed from a step checkpoint."""
    root = make_fake_msrvtt(tmp_path / "data")
    conf = TINY_CLIP4CLIP
    repo = REPO
    # the model and callbacks of tests/resume_helpers.py: the checkpoints name them, so their package is allowed
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", EXTRA_PACKAGES_ENV: "tests",
           "PYTHONPATH": str(repo)}

    def fit(name: str, *extra: str) -> subprocess.CompletedProcess:
        logger = json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                              "init_args": {"save_dir": str(tmp_path / name), "name": "r"}}])
        args = ["fit", "--config", str(conf), "--data.init_args.root", str(root), "--trainer.devices", "2",
                "--trainer.strategy", "ddp_spawn", "--model.class_path", "tests.resume_helpers.DropoutCLIP4Clip",
                "--data.init_args.batch_size", "2", "--checkpoint_every_n_train_steps", "3",
                "--trainer.enable_progress_bar", "false", "--trainer.logger", logger,
                "--trainer.callbacks+=tests.resume_helpers.SaveFinalWeights",
                f"--trainer.callbacks.path={tmp_path / name}.pt", *extra]
        return subprocess.run([sys.executable, "main.py", *args], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=600)

    # 36 pairs, 2 ranks x batch 2: 9 steps per epoch; the crash comes 2 steps after the step-12 checkpoint
    straight = fit("straight")
    assert straight.returncode == 0, straight.stderr[-5000:]
    crashed = fit("resumed", "--trainer.callbacks+=tests.resume_helpers.CrashAtStep", "--trainer.callbacks.step=14")
    assert crashed.returncode != 0 and "simulated crash before step 14" in crashed.stderr
    run_dir = tmp_path / "resumed" / "r" / "version_0"
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 12 and len(ckpt["callbacks"]["ExactResume"]["rng"]) == 2
    resumed = fit("resumed", "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"))
    assert resumed.returncode == 0, resumed.stderr[-5000:]

    def values(run: Path) -> list[tuple]:
        with (run / "metrics.csv").open(newline="") as fh:
            return sorted((r["epoch"], r["step"], k, v) for r in csv.DictReader(fh) for k, v in r.items()
                          if v and k not in ("epoch", "step") and "eval_seconds" not in k and not k.startswith("test/"))

    # (under ddp_spawn the uninterrupted run's final test opens a new logger version; the resumed run's logger
    # version is pinned, so its test rows land in the fit directory: test rows are left out)
    reference = next((tmp_path / "straight").rglob("checkpoints")).parent
    assert values(run_dir) == values(reference)
    final = torch.load(tmp_path / "resumed.pt", weights_only=True)
    expected = torch.load(tmp_path / "straight.pt", weights_only=True)
    assert all(torch.equal(final[k], expected[k]) for k in expected), "final weights differ"


def test_ddp_postprocess_bank_is_gathered_like_a_single_process(tmp_path: Path) -> None:
    """QB-Norm's bank encoded on two ranks (an odd size: the sampler pads) equals one process's bank."""
    from main import main

    root = make_fake_msrvtt(tmp_path / "data", num_train=8, num_test=5)
    flags = ["--model.init_args.postprocess", "[dsl, qbnorm]", "--model.init_args.qbnorm_bank_size", "23"]

    def logger(name: str) -> str:
        return json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                            "init_args": {"save_dir": str(tmp_path / "runs"), "name": name}}])

    main(["fit", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root", str(root), "--trainer.devices", "2",
          "--trainer.strategy", "ddp_spawn", "--trainer.max_epochs", "1", "--trainer.logger", logger("ddp"), *flags])
    ddp = next((tmp_path / "runs" / "ddp").rglob("test/metrics.json")).parent.parent  # ddp_spawn: not always version_0
    ckpt = next((tmp_path / "runs" / "ddp").rglob("best-*.ckpt"))
    main(["test", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root", str(root), "--ckpt_path", str(ckpt),
          "--trainer.logger", logger("single"), *flags])
    single = tmp_path / "runs" / "single" / "version_0"
    for test_dir in (ddp / "test", single / "test"):
        bank = json.loads((test_dir / "metrics_qbnorm.json").read_text())["postprocess"]["bank"]
        assert bank["size"] == 23 and bank["available"] == 24
        assert len(json.loads((test_dir / "bank_text_ids_qbnorm.json").read_text())) == 23
    import numpy as np

    for name in ("sim_bank_qbnorm.npy", "sim_t2v_qbnorm.npy", "sim_t2v_dsl.npy"):
        np.testing.assert_allclose(np.load(ddp / "test" / name), np.load(single / "test" / name), atol=1e-4,
                                   err_msg=name)
    assert json.loads((ddp / "test" / "metrics_qbnorm.json").read_text())["world_size"] == 2


def test_ddp_excae_test_on_two_ranks_finishes_and_writes_expert_usage(tmp_path: Path) -> None:
    """ExCae's test on two ranks ends, with its ``expert_usage.json``: the run directory comes from
    ``trainer.log_dir``, a broadcast every rank must join, so rank 0 alone asking for it waited on a rank that had
    already finished (gloo: 'Connection closed by peer'; found by the dress rehearsal, tests/test_rehearsal.py)."""
    root = make_fake_msrvtt(tmp_path / "data", num_train=8, num_test=5)
    store = root / "captions" / "multi_test.jsonl"
    store.parent.mkdir(parents=True, exist_ok=True)
    videos = [v["video_id"] for v in json.loads((root / "MSRVTT_data.json").read_text())["videos"]]
    store.write_text("".join(json.dumps({"video_id": v, "kind": "multi", "prompt": "p", "model": "test",
                                         "created": "2026-12-06T00:00:00", "captions": [f"clip {v} take {k}"
                                                                                       for k in range(3)]}) + "\n"
                             for v in videos))
    model = json.dumps({"class_path": "ExCae", "init_args": {
        "backbone": {"class_path": "OpenCLIPBackbone",
                     "init_args": {"model_name": "vtr-tiny-clip", "pretrained": None, "max_words": 16}},
        "num_experts": 6, "experts_per_group": 2, "expert_heads": 2, "expert_ffn": 32, "expert_dropout": 0.0,
        "lr": 1e-3}})
    logger = json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                          "init_args": {"save_dir": str(tmp_path / "runs"), "name": "excae"}}])
    args = ["fit", "--config", str(TINY_CLIP4CLIP), "--model", model, "--data.init_args.root", str(root),
            "--data.init_args.aux_captions", json.dumps({"multi": "captions/multi_test.jsonl"}),
            "--trainer.devices", "2", "--trainer.strategy", "ddp_find_unused_parameters_true",
            "--trainer.max_epochs", "1", "--trainer.logger", logger, "--trainer.enable_progress_bar", "false"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(REPO)}
    try:  # a rank waiting on a collective the other never joins would wait for gloo's 30-minute timeout
        done = subprocess.run([sys.executable, "main.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"ExCae's two-rank fit/test stalled:\n{exc.stdout}\n{exc.stderr}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    test_dir = next((tmp_path / "runs").rglob("test/metrics.json")).parent
    assert json.loads((test_dir / "metrics.json").read_text())["world_size"] == 2
    usage = json.loads((test_dir / "expert_usage.json").read_text())
    assert usage["routing"] == "topk" and len(usage["experts"]) == 6
