"""ExCae's caption self-improvement: the caption score, the acceptance and stopping rules, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import yaml

from datamodules import SynthVTR
from experiments.csi.cli import CSIError, run_csi
from experiments.csi.engineers import PromptEngineer, RandomMutation, ScoredPrompt, first_instruction
from experiments.csi.score import SentenceEmbedder, caption_score
from lightning_modules.captioning import Simulated
from tests.run_helpers import REPO

SIZES = {"num_families": 6, "family_size": 2, "test_families": 1, "val_families": 1, "video_size": 32,
         "video_frames": 16, "num_frames": 4, "image_size": 32, "num_workers": 0}
INITIAL = "Generate 10 captions from different perspectives about this video."


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("csi-synth")
    dm = SynthVTR(root=str(root), **SIZES)
    dm.generator_workers = 1
    dm.prepare_data()
    return root


def test_caption_score_hand_computed() -> None:
    # video 0: captions (1,0) and (0,1), text (1,0): sim = (1 + 0)/2, div = 1 - cos = 1 - 0 = 1
    # video 1: captions (1,0) twice, texts (1,0) and (0,1): sim = (1 + 0 + 1 + 0)/4 = 0.5, div = 1 - 1 = 0
    captions = [torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[3.0, 0.0], [1.0, 0.0]])]
    texts = [torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    s = caption_score(captions, texts)
    assert (s.similarity, s.diversity, s.score) == pytest.approx((0.5, 0.5, 1.0))
    assert caption_score(captions, texts, 2.0, 0.5).score == pytest.approx(2 * 0.5 + 0.5 * 0.5)
    assert caption_score([torch.tensor([[1.0, 1.0]])], [torch.tensor([[1.0, 0.0]])]).diversity == 0.0  # K = 1
    with pytest.raises(ValueError, match="one caption and one text set per video"):
        caption_score(captions, texts[:1])


def test_first_instruction_and_random_mutation_are_deterministic() -> None:
    assert first_instruction('\n  Instruction: "Describe every object."\nScore: 1') == "Describe every object."
    assert first_instruction("1. Write ten captions.") == "Write ten captions."
    history = [ScoredPrompt(INITIAL, 0.5, True), ScoredPrompt(INITIAL + " Cover every detail.", 0.7, True)]
    a, b = RandomMutation(seed=3), RandomMutation(seed=3)
    proposals = [a.propose(history, r, 10) for r in range(1, 6)]
    assert proposals == [b.propose(history, r, 10) for r in range(1, 6)]
    assert all(p.startswith(INITIAL) and p != history[1].prompt for p in proposals)  # edits of the best prompt


class Scripted(PromptEngineer):
    """Proposes a fixed list of prompts (the acceptance rule's test)."""

    def __init__(self, prompts: Sequence[str]) -> None:
        self.prompts = list(prompts)

    @property
    def name(self) -> str:
        return "scripted"

    def propose(self, history: Sequence[ScoredPrompt], round_index: int, num_captions: int) -> str:
        return self.prompts[round_index - 1]


def _data(root: Path) -> SynthVTR:
    return SynthVTR(root=str(root), **SIZES)


def test_acceptance_rule_duplicates_and_patience(synth_root: Path, tmp_path: Path) -> None:
    every = INITIAL + " Cover every detail."
    colours = INITIAL + " Mention the colours of the main objects."
    prompts = [colours, every, every, "", colours + " Be concise yet descriptive.", "never reached"]
    summary = run_csi(Simulated(hallucination_rate=0.0), Scripted(prompts), _data(synth_root), SentenceEmbedder(),
                      out=str(tmp_path), num_captions=4, probe_videos=4, max_rounds=10, patience=3,
                      wandb_project=None)
    rounds = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rounds] == [INITIAL, *prompts[:5]]
    best = float("-inf")
    for r in rounds:  # accepted exactly when the score beats every earlier score
        if r["score"] is None:
            assert not r["accepted"] and r["error"] == "the engineer returned no instruction"
            continue
        assert r["accepted"] == (r["score"] > best), r
        best = max(best, r["score"])
        assert r["best_score"] == pytest.approx(best)
    assert rounds[3]["duplicate"] and rounds[3]["duplicate_of"] == 2 and rounds[3]["score"] == rounds[2]["score"]
    # the simulated captioner describes what a prompt asks for: every detail scores above colours alone
    assert rounds[2]["score"] > rounds[1]["score"]
    stale = 0
    for r in rounds[1:]:
        stale = 0 if r["accepted"] else stale + 1
    assert stale == 3 and summary["stopped"].startswith("no new candidate for 3 rounds")
    top = max((r for r in rounds if r["score"] is not None), key=lambda r: r["score"])
    assert (tmp_path / "best_prompt.txt").read_text().strip() == top["prompt"] == summary["best_prompt"]
    assert (tmp_path / "score_vs_round.png").stat().st_size > 0
    written = json.loads((tmp_path / "summary.json").read_text())
    assert {"git_sha", "git_dirty", "git_diff_sha256", "environment"} <= set(written)  # the code and machine
    pool = json.loads((tmp_path / "candidates.json").read_text())
    assert [row["round"] for row in pool["rows"]] == [r["round"] for r in rounds if r["round"] == 0 or r["accepted"]]
    with pytest.raises(CSIError, match="other settings"):  # the same folder with another setting
        run_csi(Simulated(hallucination_rate=0.0), Scripted(prompts), _data(synth_root), SentenceEmbedder(),
                out=str(tmp_path), num_captions=5, probe_videos=4, max_rounds=10, patience=3, wandb_project=None)


def _config(path: Path, root: Path, out: Path, delay: float) -> Path:
    config = {"out": str(out), "num_captions": 3, "probe_videos": 3, "max_rounds": 6, "patience": 6,
              "wandb_project": None, "seed": 1,
              "captioner": {"class_path": "Simulated", "init_args": {"seed": 0, "delay_s": delay}},
              "engineer": {"class_path": "RandomMutation", "init_args": {"seed": 2}},
              "evaluator": {"class_path": "SentenceEmbedder"},
              "data": {"class_path": "SynthVTR", "init_args": {"root": str(root), **SIZES}}}
    path.write_text(yaml.safe_dump(config))
    return path


def _rounds(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (out / "rounds.jsonl").read_text().splitlines()]


def test_killed_csi_resumes_and_ends_like_an_uninterrupted_run(synth_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    whole = tmp_path / "whole"
    subprocess.run([sys.executable, "-m", "experiments.csi", "--config",
                    str(_config(tmp_path / "a.yaml", synth_root, whole, 0.0))], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=600)
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "experiments.csi", "--config",
               str(_config(tmp_path / "b.yaml", synth_root, killed, 0.4))]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    log = killed / "rounds.jsonl"
    while time.monotonic() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(log.read_text().splitlines())
    assert 2 <= done_before < 6 and not (killed / "best_prompt.txt").exists()
    resumed = subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, text=True, timeout=600)
    assert f"resuming {killed}: {done_before} round(s) done" in resumed.stdout
    # the simulated delay changes nothing but time: the resumed run ends where the uninterrupted one ended
    assert _rounds(killed) == _rounds(whole)
    assert (killed / "best_prompt.txt").read_text() == (whole / "best_prompt.txt").read_text()
