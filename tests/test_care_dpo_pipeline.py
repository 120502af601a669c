"""CaRe-DPO's whole pipeline (``python -m experiments.care_dpo``) on the tiny SynthVTR with a tiny random Llama, from
the shipped SynthVTR configs with size overrides only; then a rerun that skips every stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.care_dpo.cli import run
from main import main
from tests.caption_helpers import CONFIGS, TINY_SYNTH, save_tiny_llama, synth_args, tiny_synth
from tests.run_helpers import REPO

PIPELINE = REPO / "configs" / "care_dpo" / "synthvtr.yaml"


def _data(prefix: str, root: Path, keep_predict: bool) -> list[str]:
    values = {**TINY_SYNTH, "root": str(root)}
    if not keep_predict:
        values = {k: v for k, v in values.items() if not k.startswith("predict") and k != "video_dir"}
    return [f"--{prefix}.{k}={v}" for k, v in values.items()]


def pipeline_settings(tmp_path: Path) -> dict:
    """The shipped SynthVTR pipeline config with the tiny data, a tiny LM and one epoch per stage (sizes only)."""
    import yaml

    from experiments.care_dpo.pipeline import DGDPO, Sampling, Scoring

    tiny_synth(tmp_path)
    main(["predict", "--config", str(CONFIGS / "synthvtr_supplement_c.yaml"), *synth_args(tmp_path),
          f"--trainer.default_root_dir={tmp_path / 'zero_shot_run'}", "--trainer.enable_progress_bar=false"])
    llama = save_tiny_llama(tmp_path / "tiny-llama")
    # sizes only: the tiny data, a 2-layer random LM (all its layers: it has fewer than the shipped 6), one epoch,
    # small batches; quiet progress bars
    lm = [f"--model.init_args.captioner.init_args.lm={llama}", "--model.init_args.captioner.init_args.lm_layers=2"]
    quiet = ["--trainer.enable_progress_bar=false"]
    overrides = {
        "sft": [*_data("data.init_args", tmp_path, False), *lm, "--data.init_args.batch_size=2",
                "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1", *quiet],
        "dgdpo": [*_data("data.init_args.videos.init_args", tmp_path, False), *lm, "--data.init_args.batch_size=2",
                  "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1", *quiet],
        "caption": [*_data("data.init_args", tmp_path, True), *quiet],
        "retriever": [*_data("data.init_args", tmp_path, False), "--data.init_args.batch_size=2",
                      "--trainer.max_epochs=1", *quiet],
    }
    settings = yaml.safe_load(PIPELINE.read_text())
    shipped = settings.get("overrides") or {}  # the shipped config's own stage arguments stay, the sizes follow
    overrides = {kind: [*shipped.get(kind, []), *overrides.get(kind, [])] for kind in {*shipped, *overrides}}
    settings.update(work=str(tmp_path / "work"), out=str(tmp_path / "out"), overrides=overrides,
                    sampling={**settings["sampling"], "num_samples": 2, "max_new_tokens": 6, "batch_size": 3})
    return {**settings, "sampling": Sampling(**settings["sampling"]), "scoring": Scoring(**settings["scoring"]),
            "dgdpo": DGDPO(**settings["dgdpo"])}


def test_pipeline_runs_every_stage_then_skips_them(tmp_path: Path) -> None:
    args = pipeline_settings(tmp_path)
    core = run(**args)  # the shipped default: the pipeline proper (its scorer is the SFT row)
    assert set(core["retrieval"]) == {"sft-role", "dgdpo-role"} and core["skipped_stages"] == []
    # the pipeline's own provenance, and each retriever's code state as its metrics.json recorded it
    assert {"git_sha", "git_dirty", "git_diff_sha256", "environment"} <= set(core)
    assert all({"git_sha", "git_dirty", "git_diff_sha256"} <= set(m) for m in core["retrieval"].values())
    # the README's table command: the same plus the two comparison retrievers, every earlier stage reused
    args = {**args, "sources": ["zero_shot", "sft", "dgdpo"], "role_ablation_sources": ["dgdpo"]}
    summary = run(**args)
    assert set(summary["retrieval"]) == {"zero_shot-role", "sft-role", "dgdpo-role", "dgdpo-norole"}
    assert set(summary["skipped_stages"]) == {"sft", "captions_sft", "retriever_sft_role", "sample", "score", "dgdpo",
                                              "captions_dgdpo", "retriever_dgdpo_role"}
    assert summary["retrieval"]["dgdpo-role"] == core["retrieval"]["dgdpo-role"]
    for metrics in summary["retrieval"].values():
        assert 0.0 <= metrics["t2v_R1"] <= 100.0 and metrics["num_videos"] == 2
    assert set(summary["captions"]) == {"zero_shot", "sft", "dgdpo"}
    assert {"caption_r1", "family_r1", "attribute_precision", "distinct_captions"} <= set(summary["captions"]["sft"])
    assert summary["preference_pairs"]["inter"] == 4  # every training video has a family neighbour
    assert summary["preference_pairs"]["intra"] + summary["preference_pairs"]["intra_ties"] == 4
    work = tmp_path / "work" / "seed0"
    store = next((work / "preferences").glob("*.jsonl"))
    record = json.loads(store.read_text().splitlines()[0])
    assert len(record["captions"]) == 2 and len(record["relevance"]) == 2 and record["relevance_rule"] == "margin"
    captions = next((work / "captions").glob("dgdpo-*.jsonl"))
    assert len(captions.read_text().splitlines()) == 8  # every video of the three splits
    # a second run finds every output and only rebuilds the summary
    again = run(**args)
    assert set(again["skipped_stages"]) >= {"sft", "captions_sft", "sample", "score", "dgdpo", "captions_dgdpo"}
    assert again["retrieval"]["dgdpo-role"]["t2v_R1"] == summary["retrieval"]["dgdpo-role"]["t2v_R1"]
    # a stage config changed since: the finished stage is not reused silently
    from experiments.care_dpo.pipeline import PipelineError

    sft = [*args["overrides"]["sft"], "--model.init_args.lr=0.5"]
    changed = {**args, "overrides": {**args["overrides"], "sft": sft}}
    with pytest.raises(PipelineError, match=r"sft: .* was made with other settings"):
        run(**changed)


@pytest.mark.slow
def test_pipeline_killed_during_dgdpo_then_rerun_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    """SIGKILL of the whole process group (the pipeline and its running main.py stage) part-way through DG-DPO
    training; the rerun of the same command skips the finished stages, redoes DG-DPO and ends with the summary and
    caption files of a run never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    args = pipeline_settings(tmp_path)
    plain = {k: (v.__dict__ if hasattr(v, "__dict__") else v) for k, v in args.items()}

    def command(name: str) -> list[str]:
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({**plain, "work": str(tmp_path / name / "work"),
                                          "out": str(tmp_path / name / "out")}))
        return [sys.executable, "-m", "experiments.care_dpo", "--config", str(config)]

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    subprocess.run(command("whole"), cwd=REPO, env=env, check=True, capture_output=True, timeout=1200)
    killed = subprocess.Popen(command("killed"), cwd=REPO, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stage_log = tmp_path / "killed" / "work" / "seed0" / "dgdpo"
    deadline = time.time() + 900
    while not list(stage_log.glob("*/stage.log")) and killed.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(4.0)  # inside the DG-DPO main.py process
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not list(stage_log.glob("*/done.json")), "DG-DPO finished before the kill; kill earlier"
    subprocess.run(command("killed"), cwd=REPO, env=env, check=True, capture_output=True, timeout=1200)
    whole = json.loads((tmp_path / "whole" / "out" / "summary.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "out" / "summary.json").read_text())
    assert {"sft", "captions_sft", "sample", "score"} <= set(resumed["skipped_stages"])
    for run_name, metrics in whole["retrieval"].items():
        for key in ("t2v_R1", "t2v_R5", "t2v_MnR", "v2t_R1"):
            assert resumed["retrieval"][run_name][key] == metrics[key], (run_name, key)
    assert resumed["captions"] == {k: {**v, "captions": resumed["captions"][k]["captions"]}
                                   for k, v in whole["captions"].items()}
    for path in (tmp_path / "whole" / "work" / "seed0" / "captions").glob("dgdpo-*.jsonl"):
        twin = tmp_path / "killed" / "work" / "seed0" / "captions" / path.name
        assert [r["captions"] for r in map(json.loads, path.read_text().splitlines())] == [
            r["captions"] for r in map(json.loads, twin.read_text().splitlines())]
