"""Test-time post-processing (DSL, QB-Norm) through the CLI: own files, plain numbers untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lightning_modules.metrics import retrieval_metrics
from lightning_modules.postprocess import qb_norm
from main import main
from tests.run_helpers import TINY_CLIP4CLIP as CONF
from tests.run_helpers import csv_logger, narvid_args

FLAGS = ["--model.init_args.postprocess", "[dsl, qbnorm]"]
T2V = ("t2v_R1", "t2v_R5", "t2v_R10", "t2v_MdR", "t2v_MnR")
V2T = ("v2t_R1", "v2t_R5", "v2t_R10", "v2t_MdR", "v2t_MnR")


def check_postprocessed(test_dir: Path) -> dict[str, dict]:
    """Both files exist, carry their flag's parameters, and agree with the metrics recomputed from their matrices."""
    plain = json.loads((test_dir / "metrics.json").read_text())
    assert plain["postprocess"] == "none"
    gt = json.loads((test_dir / "text_to_video.json").read_text())
    records = {}
    for flag in ("dsl", "qbnorm"):
        record = json.loads((test_dir / f"metrics_{flag}.json").read_text())
        records[flag] = record
        assert record["postprocess"]["name"] == flag
        assert record["num_texts"] == plain["num_texts"] and record["num_videos"] == plain["num_videos"]
        sim = np.load(test_dir / f"sim_t2v_{flag}.npy")
        assert sim.dtype == np.float32 and sim.shape == (plain["num_texts"], plain["num_videos"])
        again = retrieval_metrics(sim, gt)
        for key in T2V:
            assert record["metrics"][key] == pytest.approx(again[key], abs=1e-6), (flag, key)
    dsl, qb = records["dsl"], records["qbnorm"]
    assert dsl["postprocess"]["params"] == {"temperature": 100.0}
    assert dsl["postprocess"]["bank"]["split"] == "test"
    dsl_v2t = retrieval_metrics(np.load(test_dir / "sim_v2t_dsl.npy"), gt)
    for key in V2T:
        assert dsl["metrics"][key] == pytest.approx(dsl_v2t[key], abs=1e-6), key
    assert qb["postprocess"]["params"]["beta"] == 20.0 and qb["postprocess"]["params"]["topk"] == 1
    assert qb["postprocess"]["bank"]["split"] == "train"
    assert "not post-processed" in qb["postprocess"]["directions"]["v2t"]
    for key in V2T:  # QB-Norm leaves v2t alone: the plain numbers
        assert qb["metrics"][key] == plain["metrics"][key], key
    bank_ids = json.loads((test_dir / "bank_text_ids_qbnorm.json").read_text())
    assert len(bank_ids) == qb["postprocess"]["bank"]["size"]
    assert not set(bank_ids) & set(json.loads((test_dir / "text_ids.json").read_text()))
    expected = qb_norm(np.load(test_dir / "sim_t2v.npy"), np.load(test_dir / "sim_bank_qbnorm.npy"), 20.0, 1)
    np.testing.assert_array_equal(np.load(test_dir / "sim_t2v_qbnorm.npy"), expected)
    return records


def test_postprocess_flags_write_their_own_files(fake_msrvtt: Path, tmp_path: Path) -> None:
    common = ["fit", "--config", str(CONF), "--data.init_args.root", str(fake_msrvtt), "--trainer.max_epochs", "1"]
    plain = main([*common, "--trainer.logger", csv_logger(tmp_path, "plain")])
    flagged = main([*common, "--trainer.logger", csv_logger(tmp_path, "flagged"), *FLAGS,
                    "--model.init_args.qbnorm_bank_size", "20"])
    plain_dir, flagged_dir = (Path(c.trainer.log_dir) / "test" for c in (plain, flagged))
    assert not list(plain_dir.glob("metrics_*.json")) and not list(plain_dir.glob("sim_t2v_*.npy"))
    records = check_postprocessed(flagged_dir)
    bank = records["qbnorm"]["postprocess"]["bank"]
    assert bank["size"] == 20 and bank["available"] == 36  # 12 training videos x 3 captions, 20 drawn
    # the flags change nothing about the plain run: same seed, same metrics.json numbers and matrix
    a, b = (json.loads((d / "metrics.json").read_text())["metrics"] for d in (plain_dir, flagged_dir))
    a.pop("eval_seconds"), b.pop("eval_seconds")
    assert a == b
    np.testing.assert_array_equal(np.load(plain_dir / "sim_t2v.npy"), np.load(flagged_dir / "sim_t2v.npy"))
    print({flag: {k: r["metrics"][k] for k in ("t2v_R1", "v2t_R1")} for flag, r in records.items()},
          {k: a[k] for k in ("t2v_R1", "v2t_R1")})
    # the flags on `test` of a checkpoint trained without them (the usual way to post-process a finished run)
    retest = main(["test", "--config", str(CONF), "--data.init_args.root", str(fake_msrvtt), *FLAGS,
                   "--model.init_args.qbnorm_bank_size", "20", "--trainer.logger", csv_logger(tmp_path, "retest"),
                   "--ckpt_path", plain.trainer.checkpoint_callback.best_model_path])
    again = check_postprocessed(Path(retest.trainer.log_dir) / "test")
    for flag in ("dsl", "qbnorm"):
        for key in ("t2v_R1", "t2v_R5", "t2v_MnR", "v2t_R1"):
            assert again[flag]["metrics"][key] == pytest.approx(records[flag]["metrics"][key], abs=1e-6), (flag, key)


def test_qbnorm_refuses_a_bank_that_overlaps_the_test_split_before_training(
        fake_msrvtt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a training list that contains the test videos: their captions would be in the bank
    (fake_msrvtt / "train_with_test.csv").write_text("video_id\n" + "\n".join(f"video{i}" for i in range(18)) + "\n")
    steps: list[int] = []
    monkeypatch.setattr("lightning_modules.base.BaseRetrievalModule.training_step",
                        lambda self, batch, batch_idx: steps.append(batch_idx))
    with pytest.raises(ValueError, match=r"model.init_args.postprocess: qbnorm.*shares 6 videos"):
        main(["fit", "--config", str(CONF), "--data.init_args.root", str(fake_msrvtt), "--trainer.max_epochs", "1",
              "--data.init_args.train_csv", "train_with_test.csv", "--trainer.logger", csv_logger(tmp_path, "leak"),
              "--model.init_args.postprocess", "[qbnorm]"])
    assert steps == []  # refused at setup, before the first training step


def test_postprocess_with_narvid_query_dependent_similarity(narrated_msrvtt: Path, tmp_path: Path) -> None:
    cli = main([*narvid_args(narrated_msrvtt, tmp_path, "narvid"), *FLAGS])
    test_dir = Path(cli.trainer.log_dir) / "test"
    records = check_postprocessed(test_dir)
    assert records["qbnorm"]["postprocess"]["bank"]["size"] == 36
    assert np.load(test_dir / "sim_bank_qbnorm.npy").shape == (36, 6)
