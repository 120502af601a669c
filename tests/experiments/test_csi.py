"""ExCae's caption self-improvement: the caption score, the acceptance and stopping rules, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import hypothesis.strategies as st
import pytest
import torch
import yaml
from hypothesis import given

from datamodules import SynthVTR
from datamodules.jsonl import repaired_bytes
from experiments.csi.cli import CSIError, _resume_log, run_csi
from experiments.csi.engineers import (
    LLMPromptEngineer,
    ProbeExample,
    PromptEngineer,
    RandomMutation,
    RoundContext,
    ScoredPrompt,
    first_instruction,
)
from experiments.csi.score import SentenceEmbedder, caption_score
from lightning_modules.captioning import Simulated
from tests.malformed_inputs import mutated_jsonl
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
        self.contexts: list[RoundContext | None] = []

    @property
    def name(self) -> str:
        return "scripted"

    def propose(self, history: Sequence[ScoredPrompt], round_index: int, num_captions: int,
                context: RoundContext | None = None) -> str:
        self.contexts.append(context)
        return self.prompts[round_index - 1]


class _RecordingLM:
    model_name = "recording"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def complete(self, conversations, max_new_tokens=None, temperature=None):
        self.prompts.append(conversations[0][-1]["content"])
        return ["Describe every object."]


def test_llm_engineer_sees_the_rounds_pairs_bounded_or_only_prompts() -> None:
    history = [ScoredPrompt(INITIAL, 0.5, True)]
    long = "a red cube rolls " * 40
    context = RoundContext(INITIAL, (ProbeExample(("a red cube rolls left", "a cube moves"), (long, "a blue ball")),
                                     ProbeExample(("a green star",), ("a star",)),
                                     ProbeExample(("never shown",), ("never shown",))))
    lm = _RecordingLM()
    assert LLMPromptEngineer(lm, context_videos=2, context_chars=60).propose(history, 1, 10, context) == \
        "Describe every object."
    shown = lm.prompts[-1]
    assert "a red cube rolls left" in shown and "a blue ball" in shown and "a green star" in shown
    assert "never shown" not in shown  # at most context_videos videos
    assert max(len(line) for line in shown.splitlines() if line.startswith("  - ")) <= 4 + 60  # each text cut
    LLMPromptEngineer(lm, engineer_context="prompts").propose(history, 1, 10, context)
    assert "a red cube" not in lm.prompts[-1] and INITIAL in lm.prompts[-1]
    with pytest.raises(ValueError, match="engineer_context"):
        LLMPromptEngineer(lm, engineer_context="videos")  # type: ignore[arg-type]


def _data(root: Path) -> SynthVTR:
    return SynthVTR(root=str(root), **SIZES)


def test_acceptance_rule_duplicates_and_patience(synth_root: Path, tmp_path: Path) -> None:
    every = INITIAL + " Cover every detail."
    colours = INITIAL + " Mention the colours of the main objects."
    prompts = [colours, every, every, "", colours + " Be concise yet descriptive.", "never reached"]
    engineer = Scripted(prompts)
    summary = run_csi(Simulated(hallucination_rate=0.0), engineer, _data(synth_root), SentenceEmbedder(),
                      out=str(tmp_path), num_captions=4, probe_videos=4, max_rounds=10, patience=3,
                      wandb_project=None)
    rounds = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    # the engineer is shown the iteration's video-text pairs: the best round so far with its example captions
    first, later = engineer.contexts[0], engineer.contexts[2]
    assert first is not None and first.prompt == INITIAL
    assert later is not None and later.prompt == every  # round 2 (every detail) was the best before round 3
    assert [list(e.captions) for e in later.examples] == list(rounds[2]["examples"].values())
    assert all(e.texts for e in later.examples)
    # the prompt's lineage: chosen on training videos and texts only
    lineage = json.loads((tmp_path / "best_prompt.txt.lineage.json").read_text())
    (probe,) = lineage["reads"]
    assert probe["role"] == "probe set" and probe["split"] == "train" and probe["n_videos"] == 4
    assert probe["test_videos"] == 0 and probe["test_texts"] == 0
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


ROUNDS = b"".join(json.dumps({"round": k, "prompt": f"{INITIAL} Décris 漢字 {k}", "score": 0.5 + k / 10,
                              "similarity": 0.5, "diversity": k / 10, "accepted": True}, ensure_ascii=False).encode()
                  + b"\n" for k in range(4))


@given(data=st.data())
def test_generated_damaged_round_logs_resume_from_whole_rounds_or_stop_clearly(data: st.DataObject) -> None:
    """CSI's resume on a round log with one drawn mutation (a cut anywhere, also inside a character; a field of
    another type; bad bytes): a CSIError naming the log, which stays unchanged, or the whole rounds in order, with
    the log cut back to them so the next round is appended on a line of its own."""
    mutated = data.draw(mutated_jsonl(ROUNDS), label="log")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "rounds.jsonl"
        log.write_bytes(mutated)
        try:
            rounds = _resume_log(log)
        except CSIError as exc:
            assert "rounds.jsonl" in str(exc)
            assert log.read_bytes() == mutated
        else:
            assert [r["round"] for r in rounds] == list(range(len(rounds)))
            assert all(isinstance(r["prompt"], str) and isinstance(r["accepted"], bool) for r in rounds)
            assert log.read_bytes() == repaired_bytes(mutated, log)
