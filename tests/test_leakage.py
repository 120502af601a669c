"""The leakage verdict of real runs, computed from their lineage: constructed cases through the CLI.

Each case runs the real commands on generated data and reads ``metrics.json``: a clean run says none; selecting on
the test split, training on test videos, and reading test videos' supplements written from test queries
(conical embedding optimisation's ``per_candidate`` with prompt A under ``text_context: any``) each name what read
test data; the same supplements written under the default ``text_context: training`` are clean; QB-Norm's bank is
one more read. (The verdict rules for every role, chains through stores and checkpoints - a preference scorer
selected on test - and unverifiable inputs are unit-tested in ``tests/datamodules/test_lineage.py``.)
"""

from __future__ import annotations

import json
from pathlib import Path

from main import main
from tests.caption_helpers import CONFIGS, synth_args, tiny_synth
from tests.run_helpers import REPO, TINY_CLIP4CLIP, csv_logger


def _fit(root: Path, out: Path, name: str, *extra: str) -> dict:
    # MSR-VTT's shipped default, held-out selection (the tiny config selects on test for the other CLI tests);
    # ``extra`` may switch it back
    cli = main(["fit", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root", str(root), "--trainer.max_epochs",
                "1", "--trainer.enable_progress_bar=false", "--trainer.logger", csv_logger(out, name),
                "--data.init_args.val_protocol", "heldout", *extra])
    record = json.loads((Path(cli.trainer.log_dir) / "test" / "metrics.json").read_text())
    record["_best"] = cli.trainer.checkpoint_callback.best_model_path
    return record


def test_clean_run_selection_on_test_and_training_on_test(fake_msrvtt: Path, tmp_path: Path) -> None:
    clean = _fit(fake_msrvtt, tmp_path, "clean")
    assert clean["leakage"] == [] and clean["leakage_unverified"] == []
    fit_node = clean["lineage"]["upstream"][0]
    roles = {r["role"]: (r["split"], r["n_videos"], r["test_videos"]) for r in fit_node["reads"]}
    assert roles == {"training": ("train", 8, 0), "model selection": ("val", 4, 0)}
    # QB-Norm re-tested on the checkpoint: its bank of training texts is one more read, and clean
    retest = main(["test", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root", str(fake_msrvtt),
                   "--ckpt_path", clean["_best"], "--model.init_args.postprocess", "[qbnorm]",
                   "--trainer.enable_progress_bar=false", "--trainer.logger", csv_logger(tmp_path, "qb")])
    qb = json.loads((Path(retest.trainer.log_dir) / "test" / "metrics_qbnorm.json").read_text())
    (bank,) = [r for r in qb["lineage"]["reads"] if r["role"] == "query bank"]
    assert bank["n_texts"] > 0 and bank["test_texts"] == 0 and qb["leakage"] == []

    on_test = _fit(fake_msrvtt, tmp_path, "select_on_test", "--data.init_args.val_protocol", "test")
    assert on_test["leakage"] == ["test of CLIP4Clip <- fit of CLIP4Clip: model selection read 6 test videos and 6 "
                                  "test texts [msrvtt/val] - test split (val_protocol: test, CLIP4Clip's habit)"]

    (fake_msrvtt / "train_plus_test.csv").write_text(
        "video_id\n" + "\n".join(f"video{i}" for i in range(18)) + "\n")
    polluted = _fit(fake_msrvtt, tmp_path, "train_on_test", "--data.init_args.train_csv", "train_plus_test.csv")
    # the training list holds the test videos (and the held-out selection videos are drawn from that list)
    assert any(leak.startswith("test of CLIP4Clip <- fit of CLIP4Clip: training read ") for leak in polluted["leakage"])
    assert sum(int(leak.split(" read ")[1].split()[0]) for leak in polluted["leakage"]) == 6  # each test video once


def test_conical_per_candidate_with_supplements_written_from_test_queries(tmp_path: Path) -> None:
    root = tiny_synth(tmp_path)
    config = CONFIGS / "synthvtr_supplement_a.yaml"
    for context, name in (("any", "a_any"), ("training", "a_training")):
        writer = tmp_path / f"{name}.yaml"  # the same captioner writing to its own store
        writer.write_text(json.dumps({"trainer": {"callbacks": [
            {"class_path": "CaptionWriter", "init_args": {"output": f"captions/{name}.jsonl"}}]}}))
        main(["predict", "--config", str(config), "--config", str(writer), *synth_args(tmp_path),
              "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path / name}",
              f"--model.init_args.text_context={context}"])
    assert (root / "captions" / "a_any.jsonl").is_file() and (root / "captions" / "a_training.jsonl").is_file()
    data = [a for a in synth_args(tmp_path)
            if not a.startswith(("--data.init_args.predict", "--data.init_args.video_dir"))]
    experiment = REPO / "configs" / "experiments" / "conical_synthvtr.yaml"
    # sizes only, and the per-candidate mode reported (sum fusion: scored as a matrix product, fast)
    common = [*data, "--data.init_args.batch_size=4", "--model.init_args.text_fusion=sum",
              "--model.init_args.test_supplement=per_candidate", "--model.init_args.report_supplements=[none]",
              "--trainer.enable_progress_bar=false"]
    fit = main(["fit", "--config", str(experiment), *common, "--trainer.max_epochs=1",
                "--data.init_args.aux_captions={supplement: captions/a_training.jsonl}",
                "--trainer.logger", csv_logger(tmp_path, "fit")])
    clean = json.loads((Path(fit.trainer.log_dir) / "test" / "metrics.json").read_text())
    assert clean["test_supplement"] == "per_candidate" and clean["leakage"] == []
    best = fit.trainer.checkpoint_callback.best_model_path
    retest = main(["test", "--config", str(experiment), *common, "--ckpt_path", best,
                   "--data.init_args.aux_captions={supplement: captions/a_any.jsonl}",
                   "--trainer.logger", csv_logger(tmp_path, "retest")])
    leaky = json.loads((Path(retest.trainer.log_dir) / "test" / "metrics.json").read_text())
    (leak,) = leaky["leakage"]
    # every test video's supplement was written from its first test query (1 test family of 2 videos here)
    assert leak.startswith("test of ConicalEmbedding: prompt texts read 2 test texts")
    assert "a_any.jsonl" in leak
