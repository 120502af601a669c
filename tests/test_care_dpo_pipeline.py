"""CaRe-DPO's whole pipeline (``python -m experiments.care_dpo``) on the tiny SynthVTR with a tiny random Llama, from
the shipped SynthVTR configs with size overrides only; then a rerun that skips every stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

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
        # sampling and scoring read the retriever's data (its overrides above): their trainers only get quiet
        "sample": quiet,
        "score": quiet,
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
    # the store's sidecar names the scorer: the sft-role retriever's best checkpoint on its validation split (held-out
    # training families, no test video), and where its reference log-probabilities came from
    from datamodules.preferences import read_meta

    meta = read_meta(store)
    scorer = meta["scorer"]
    assert Path(scorer["checkpoint"]) == Path(core["retrieval"]["sft-role"]["ckpt_path"]).resolve()
    assert scorer["selected_by"]["monitor"] == "val/t2v_R1" and scorer["selected_by"]["is_best"]
    assert scorer["selected_on"]["split"] == "val" and scorer["selected_on"]["test_videos_shared"] == 0
    assert scorer["selected_on"]["model_selection"] == "2 held-out training videos"
    assert (meta["split"], meta["n_videos"]) == ("train", 4) and meta["reference"]["precision"] == "32-true"
    captions = next((work / "captions").glob("dgdpo-*.jsonl"))
    assert len(captions.read_text().splitlines()) == 8  # every video of the three splits
    # the DG-DPO retriever's verdict, computed through the whole chain: its captions <- the DG-DPO fit <- the
    # preference store <- the scorer's fit (selected on held-out families) and the SFT captions <- the SFT fit
    record = json.loads(Path(core["retrieval"]["dgdpo-role"]["path"]).read_text())
    assert record["leakage"] == [] and record["leakage_unverified"] == [], record["leakage_unverified"]

    def kinds(node: dict) -> list[str]:
        return [node["node"], *(k for up in node["upstream"] for k in kinds(up))]

    assert {"fit", "captions", "preferences"} <= set(kinds(record["lineage"]))
    assert kinds(record["lineage"]).count("fit") >= 4  # the retriever, DG-DPO, the scorer and SFT
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


SAMPLE = REPO / "configs" / "care_dpo" / "sample_synthvtr.yaml"
HEAD_SHARPNESS = 30.0  # the tiny LM's output head, scaled (see sft_checkpoint)
# |beta * (log pi - log pi_ref)| allowed at the first step: measured 0 when sampling runs under DG-DPO's bf16-mixed,
# up to 0.06 when the reference log-probabilities come from 32-true (what sampling on the CPU without autocast gave)
REWARD_TOLERANCE = 5e-3
DGDPO = REPO / "configs" / "care_dpo" / "captioner_dgdpo_synthvtr.yaml"


@pytest.fixture(scope="module")
def sft_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The tiny SynthVTR, a tiny random Llama, and an SFT checkpoint of the shipped DG-DPO config's captioner (that
    Llama in place of SmolLM2; its initial weights: what matters here is that policy and reference are the same)."""
    import yaml

    from lightning_modules.captioning import CaptionerTraining
    from tests.caption_helpers import save_module_checkpoint

    base = tmp_path_factory.mktemp("rewards")
    tiny_synth(base)
    llama = save_tiny_llama(base / "tiny-llama")
    captioner = yaml.safe_load(DGDPO.read_text())["model"]["init_args"]["captioner"]
    captioner["init_args"].update(lm=str(llama), lm_layers=2)
    sft = save_module_checkpoint(CaptionerTraining, {"captioner": captioner}, base / "sft.ckpt")
    # a confident LM, as a trained captioner is: a random one's near-uniform next-token distribution hides precision
    # differences (bf16 moves its log-probabilities by ~1e-3, against ~0.1 with this head)
    state = torch.load(sft, weights_only=False)
    state["state_dict"]["captioner.lm.lm_head.weight"] *= HEAD_SHARPNESS
    torch.save(state, sft)
    return base, llama, sft


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_dpo_rewards_are_zero_at_the_first_dgdpo_step_when_sampling_ran_in_its_precision(
        sft_checkpoint: tuple[Path, Path, Path], precision: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampling stage (shipped config, its precision set to DG-DPO's) computes the reference log-probabilities;
    DG-DPO (shipped config) starts from the same checkpoint, so at its first step policy and reference agree and every
    DPO reward ``beta * (log pi - log pi_ref)`` is 0 - under bf16-mixed autocast on the CPU as under 32-true. A DG-DPO
    run in another precision than the samples' is refused instead."""
    import yaml

    from datamodules.preferences import meta_path, read_meta
    from lightning_modules.captioning import training

    base, llama, sft = sft_checkpoint
    samples = tmp_path / "samples.jsonl"
    videos = {"class_path": "SynthVTR", "init_args": {**{k: v for k, v in TINY_SYNTH.items()
                                                         if not k.startswith("predict") and k != "video_dir"},
                                                      "root": str(base), "feature_cache": True}}
    overlay = tmp_path / "sample.yaml"
    overlay.write_text(yaml.safe_dump({
        "model": {"init_args": {"checkpoint": str(sft), "output": str(samples), "num_samples": 2,
                                "max_new_tokens": 6}},
        "data": {"class_path": "TrainVideoChunks", "init_args": {"videos": videos, "chunk_size": 3}}}))
    main(["predict", "--config", str(SAMPLE), "--config", str(overlay), f"--trainer.precision={precision}",
          "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"])
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    assert read_meta(samples)["reference"]["precision"] == precision
    # a store by hand: the first sample preferred within each video, the next video's second sample as the rival
    store = tmp_path / "store.jsonl"
    store.write_text("".join(json.dumps({
        "video_id": r["video_id"], "query": "q", "captions": r["captions"], "ref_logprob": r["ref_logprob"],
        "relevance": [1.0, 0.0], "neighbour_id": n["video_id"], "neighbour_captions": n["captions"],
        "neighbour_ref_logprob": n["ref_logprob"], "neighbour_relevance": [0.0, 1.0]}) + "\n"
        for r, n in zip(records, records[1:] + records[:1], strict=True)))
    meta_path(store).write_text(json.dumps({"reference": read_meta(samples)["reference"]}))

    rewards: list[torch.Tensor] = []
    original = training.dpo_loss

    def recording(*args: Any, **kwargs: Any) -> Any:
        losses, chosen, rejected = original(*args, **kwargs)
        rewards.append(torch.cat([chosen.detach().float(), rejected.detach().float()]))
        return losses, chosen, rejected

    monkeypatch.setattr(training, "dpo_loss", recording)
    data = [f"--data.init_args.videos.init_args.{k}={v}" for k, v in videos["init_args"].items()]

    def dgdpo(run_precision: str) -> None:
        main(["fit", "--config", str(DGDPO), *data, f"--data.init_args.store={store}", "--data.init_args.batch_size=8",
              f"--model.init_args.captioner.init_args.lm={llama}", "--model.init_args.captioner.init_args.lm_layers=2",
              f"--model.init_args.init_checkpoint={sft}", "--model.init_args.eval_generate=false",
              f"--trainer.precision={run_precision}", "--trainer.accelerator=cpu", "--trainer.max_steps=1",
              "--trainer.limit_val_batches=0", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
              f"--trainer.default_root_dir={tmp_path / run_precision}", "--test_after_fit=false"])

    dgdpo(precision)
    first = rewards[0]
    assert first.numel() == 16  # 4 intra and 4 inter pairs, both sides
    assert first.abs().max().item() < REWARD_TOLERANCE, first
    other = "32-true" if precision == "bf16-mixed" else "bf16-mixed"
    with pytest.raises(ValueError, match=rf"computed under precision '{precision}' but DG-DPO trains under '{other}'"):
        dgdpo(other)


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


@pytest.mark.slow
def test_sampling_and_scoring_on_two_processes_write_what_one_process_writes(
        sft_checkpoint: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """``main.py predict`` of the shipped SynthVTR sampling and scoring configs on two gloo processes: each rank takes
    its share of the chunks and writes its own file, and the merged samples and the store equal one process's."""
    import os
    import subprocess
    import sys

    import yaml

    from datamodules.preferences import read_meta
    from lightning_modules.care_dpo import CaReRetriever
    from tests.caption_helpers import save_module_checkpoint

    base, _, sft = sft_checkpoint
    tower = {"class_path": "lightning_modules.backbones.PretrainedTwoTower",
             "init_args": {"embed_dim": 32, "max_words": 16, "image_size": 32, "freeze_video": True,
                           "freeze_text": True}}
    scorer = save_module_checkpoint(CaReRetriever, {"backbone": tower, "logit_scale_init": 10.0}, base / "scorer.ckpt")
    videos = {"class_path": "SynthVTR", "init_args": {**{k: v for k, v in TINY_SYNTH.items()
                                                         if not k.startswith("predict") and k != "video_dir"},
                                                      "root": str(base), "feature_cache": True}}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}

    def predict(config: Path, name: str, model: dict[str, Any], devices: int, chunk_size: int) -> None:
        overlay = tmp_path / f"{name}.yaml"
        overlay.write_text(yaml.safe_dump({"model": {"init_args": model}, "data": {
            "class_path": "TrainVideoChunks", "init_args": {"videos": videos, "chunk_size": chunk_size}}}))
        strategy = ["--trainer.strategy=ddp"] if devices > 1 else []
        subprocess.run([sys.executable, str(REPO / "main.py"), "predict", "--config", str(config), "--config",
                        str(overlay), "--trainer.accelerator=cpu", f"--trainer.devices={devices}", *strategy,
                        "--trainer.enable_progress_bar=false"], cwd=REPO, env=env, check=True, timeout=900)

    outputs = {}
    for devices in (1, 2):
        samples, store = tmp_path / f"samples{devices}.jsonl", tmp_path / f"store{devices}.jsonl"
        predict(SAMPLE, f"sample{devices}", {"checkpoint": str(sft), "output": str(samples), "num_samples": 2,
                                             "max_new_tokens": 6}, devices, chunk_size=1)
        reference = tmp_path / f"reference{devices}.jsonl"
        reference.write_text("".join(json.dumps({"video_id": r["video_id"], "kind": "supplement", "prompt": "p",
                                                 "captions": [r["captions"][0]]}) + "\n"
                                     for r in map(json.loads, samples.read_text().splitlines())))
        predict(REPO / "configs" / "care_dpo" / "score_synthvtr.yaml", f"score{devices}",
                {"checkpoint": str(scorer), "samples": str(samples), "reference_captions": str(reference),
                 "output": str(store), "candidates": 2}, devices, chunk_size=1)
        assert not list(tmp_path.glob(f"samples{devices}.jsonl.rank*")), "the rank files are merged and removed"
        assert read_meta(store)["trainer"]["world_size"] == devices
        outputs[devices] = (sorted(map(json.loads, samples.read_text().splitlines()), key=lambda r: r["video_id"]),
                            store.read_text())
    assert outputs[2][0] == outputs[1][0] and len(outputs[1][0]) == 4
    assert outputs[2][1] == outputs[1][1]
