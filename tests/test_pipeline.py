"""End to end through the CLI: fit -> test artifacts -> test --ckpt_path reproduces the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from main import main
from tests.run_helpers import TINY_CLIP4CLIP as CONF
from tests.run_helpers import assert_metrics_match_artifacts, csv_logger


@pytest.fixture(scope="module")
def fitted(fake_msrvtt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("runs")
    cli = main(["fit", "--config", str(CONF), "--data.init_args.root", str(fake_msrvtt),
                "--trainer.logger", csv_logger(out, "fit")])
    run_dir = Path(cli.trainer.log_dir)
    return {"cli": cli, "run_dir": run_dir, "out": out}


def test_fit_writes_test_artifacts(fitted: dict) -> None:
    test_dir = fitted["run_dir"] / "test"
    for name in ["metrics.json", "sim_t2v.npy", "text_ids.json", "video_ids.json", "text_to_video.json",
                 "config.yaml"]:
        assert (test_dir / name).is_file(), name
    record = assert_metrics_match_artifacts(test_dir)
    # 1k-A style: one csv query per test video
    assert record["num_texts"] == 6 and record["num_videos"] == 6
    assert record["data"]["protocol"].startswith("1k-A")
    assert record["data"]["model_selection"].startswith("test split")
    # what the run trained with (tests/conf/clip4clip_tiny.yaml: a per-device batch of 4, one process)
    assert record["data"]["train_batch"] == {"global_batch_size": 4, "per_device_batch_size": 4, "world_size": 1,
                                             "num_devices": 1, "num_nodes": 1, "set_by": "data.init_args.batch_size",
                                             "recorded_by": "this run"}
    sim = np.load(test_dir / "sim_t2v.npy")
    assert sim.dtype == np.float32 and sim.shape == (6, 6)
    assert json.loads((test_dir / "video_ids.json").read_text()) == [f"video{i}" for i in range(12, 18)]
    config = yaml.safe_load((test_dir / "config.yaml").read_text())
    assert config["model"]["class_path"].endswith("CLIP4Clip")
    assert (fitted["run_dir"] / "checkpoints").is_dir()


def test_test_from_checkpoint_reproduces_metrics(fitted: dict, fake_msrvtt: Path) -> None:
    ckpt = fitted["cli"].trainer.checkpoint_callback.best_model_path
    assert ckpt
    first = json.loads((fitted["run_dir"] / "test" / "metrics.json").read_text())
    cli = main(["test", "--config", str(CONF), "--data.init_args.root", str(fake_msrvtt),
                "--trainer.logger", csv_logger(fitted["out"], "retest"), "--ckpt_path", ckpt])
    second = assert_metrics_match_artifacts(Path(cli.trainer.log_dir) / "test")
    # a test-only run did not train: it reports the batch the tested checkpoint recorded
    assert second["data"]["train_batch"] == {**first["data"]["train_batch"], "recorded_by": "the tested checkpoint"}
    for key in ["t2v_R1", "t2v_R5", "t2v_MnR", "v2t_R1", "v2t_MnR", "rsum"]:
        assert second["metrics"][key] == pytest.approx(first["metrics"][key], abs=1e-6), key
    sim_a = np.load(fitted["run_dir"] / "test" / "sim_t2v.npy")
    sim_b = np.load(Path(cli.trainer.log_dir) / "test" / "sim_t2v.npy")
    np.testing.assert_allclose(sim_a, sim_b, atol=1e-5)


def test_all_captions_protocol_counts_every_caption(fake_msrvtt: Path, tmp_path: Path) -> None:
    cli = main(["fit", "--config", str(CONF), "--data.init_args.root", str(fake_msrvtt),
                "--data.init_args.test_protocol", "all_captions", "--data.init_args.val_protocol", "heldout",
                "--data.init_args.val_videos", "4", "--data.init_args.one_caption_per_video", "true",
                "--trainer.max_epochs", "1", "--trainer.logger", csv_logger(tmp_path, "multi")])
    record = assert_metrics_match_artifacts(Path(cli.trainer.log_dir) / "test")
    assert record["num_texts"] == 18 and record["num_videos"] == 6
    assert record["data"]["model_selection"] == "4 held-out training videos"
    assert record["data"]["protocol"] == "all captions of the test videos"
