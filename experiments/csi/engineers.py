"""CSI's prompt engineers: they propose the next captioning prompt from the history of scored prompts.

* :class:`LLMPromptEngineer` asks a text generator (an OpenAI-compatible API such as GPT-4o, as in the paper, or
  SmolLM2-135M-Instruct offline) for a better prompt, showing it earlier prompts with their scores (best last) and,
  as the paper's engineer rewrites "with reference to the corresponding video-text pairs involved in this
  iteration" (``engineer_context: pairs``, the default), some probe videos' human texts beside the captions the best
  prompt so far wrote for them (bounded in length; ``prompts`` shows the scored prompts only).
* :class:`RandomMutation` is the no-LLM baseline: it edits the best prompt so far at random, adding or removing
  one generic captioning aspect (actions, setting, colours, ...). It knows nothing about any dataset's answers.

Both are deterministic given their seed and the round number, so a resumed CSI run proposes what an
uninterrupted one would.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from lightning_modules.captioning.backends.base import TextGenerator

EngineerContext = Literal["pairs", "prompts"]


@dataclass(frozen=True)
class ScoredPrompt:
    """What an engineer sees of one earlier round."""

    prompt: str
    score: float
    accepted: bool


@dataclass(frozen=True)
class ProbeExample:
    """One probe video of a round as the engineer sees it: its human texts and the captions a prompt wrote."""

    texts: tuple[str, ...]
    captions: tuple[str, ...]


@dataclass(frozen=True)
class RoundContext:
    """The video-text pairs of the iteration: probe examples captioned with ``prompt`` (the best prompt so far)."""

    prompt: str
    examples: tuple[ProbeExample, ...]


class PromptEngineer(ABC):
    """Proposes the prompt of round ``round_index`` (>= 1) from the rounds before it."""

    @property
    @abstractmethod
    def name(self) -> str:
        """Identifier written into every round record."""

    @abstractmethod
    def propose(self, history: Sequence[ScoredPrompt], round_index: int, num_captions: int,
                context: RoundContext | None = None) -> str:
        """The next prompt (stripped, non-empty); ``context`` holds the iteration's probe pairs, when there are any."""


def best_prompt(history: Sequence[ScoredPrompt]) -> ScoredPrompt:
    return max(history, key=lambda h: h.score)


# ------------------------------------------------------------------------------------------------ LLM
META_PROMPT = """You write instructions for a video captioning model. For each instruction, the model writes \
{k} captions for a video. The captions are scored by how well they match human descriptions of the video and by \
how different they are from each other. Higher scores are better.

Earlier instructions and their scores, from worst to best:
{history}
{pairs}
Write one new instruction that is likely to score higher than all of them. It must ask for {k} captions. \
Reply with the instruction only, on one line."""

_LABEL = re.compile(r"^(new\s+)?(instruction|prompt)\s*[:\-]\s*", re.IGNORECASE)


def first_instruction(text: str) -> str:
    """The first non-empty line of a completion, without a leading ``Instruction:`` label, list marker or quotes."""
    for raw in text.splitlines():
        line = _LABEL.sub("", raw.strip().lstrip("-*0123456789.) ").strip())
        line = line.strip().strip('"').strip("\u201c\u201d").strip("'").strip()
        if line:
            return line
    return ""


class LLMPromptEngineer(PromptEngineer):
    """An LLM rewrites the prompt (OPRO-style meta-prompt over the scored history).

    Args:
        generator: the LLM (``OpenAICompatible`` with ``model: gpt-4o`` as in the paper, ``SmolLM2`` offline, or
            any ``TransformersTextLM``).
        max_history: at most this many earlier prompts are shown (the best ones, sorted ascending by score).
        temperature: sampling temperature of the request.
        max_new_tokens: completion length.
        seed: base seed; round ``r`` samples with seed ``seed + r`` where the generator takes a seed.
        engineer_context: ``pairs`` (default; the paper's): the meta-prompt also shows up to ``context_videos`` probe
            videos' human texts and the captions the best prompt so far wrote for them; ``prompts``: the scored
            prompts only.
        context_videos: probe videos shown under ``pairs``.
        context_chars: each shown text and caption is cut to this many characters, so a long caption set cannot
            crowd the history out of a small model's context.
    """

    def __init__(self, generator: TextGenerator, max_history: int = 10, temperature: float = 0.8,
                 max_new_tokens: int = 80, seed: int = 0, engineer_context: EngineerContext = "pairs",
                 context_videos: int = 2, context_chars: int = 160) -> None:
        if engineer_context not in ("pairs", "prompts"):
            raise ValueError(f"engineer_context must be pairs or prompts, got {engineer_context!r}")
        if context_videos < 1 or context_chars < 16:
            raise ValueError(f"context_videos ({context_videos}) must be >= 1 and context_chars ({context_chars}) "
                             ">= 16")
        self.generator = generator
        self.max_history = max_history
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.engineer_context = engineer_context
        self.context_videos = context_videos
        self.context_chars = context_chars

    @property
    def name(self) -> str:
        return f"llm({self.generator.model_name}, context={self.engineer_context})"

    def meta_prompt(self, history: Sequence[ScoredPrompt], num_captions: int,
                    context: RoundContext | None = None) -> str:
        unique: dict[str, float] = {}
        for h in history:
            unique[h.prompt] = max(h.score, unique.get(h.prompt, float("-inf")))
        shown = sorted(unique.items(), key=lambda kv: kv[1])[-self.max_history:]
        lines = "\n".join(f"Instruction: {p}\nScore: {s:.4f}" for p, s in shown)
        pairs = self.pairs_text(context) if self.engineer_context == "pairs" else ""
        return META_PROMPT.format(k=num_captions, history=lines, pairs=pairs)

    def pairs_text(self, context: RoundContext | None) -> str:
        """The iteration's probe pairs for the meta-prompt (empty without a context), each line bounded."""
        if context is None or not context.examples:
            return ""

        def cut(text: str) -> str:
            text = " ".join(text.split())
            return text if len(text) <= self.context_chars else text[:self.context_chars - 3].rstrip() + "..."

        blocks = []
        for n, example in enumerate(context.examples[:self.context_videos], start=1):
            human = "\n".join(f"  - {cut(t)}" for t in example.texts[:2])
            written = "\n".join(f"  - {cut(c)}" for c in example.captions[:3])
            blocks.append(f"Video {n}\nHuman descriptions:\n{human}\nCaptions written with the best instruction:\n"
                          f"{written}")
        return (f"\nVideos of this round, with their human descriptions and the captions written by the best "
                f"instruction so far ({cut(context.prompt)}):\n" + "\n".join(blocks) + "\n")

    def propose(self, history: Sequence[ScoredPrompt], round_index: int, num_captions: int,
                context: RoundContext | None = None) -> str:
        if hasattr(self.generator, "seed"):
            self.generator.seed = self.seed + round_index  # type: ignore[attr-defined]
        conversation = [{"role": "user", "content": self.meta_prompt(history, num_captions, context)}]
        (text,) = self.generator.complete([conversation], max_new_tokens=self.max_new_tokens,
                                          temperature=self.temperature)
        return first_instruction(text)


# ------------------------------------------------------------------------------------------------ random
GENERIC_ASPECTS: tuple[str, ...] = (
    "Describe the actions and motion of each subject.",
    "Mention where things are located in the frame.",
    "Describe the background and setting.",
    "Mention the colours of the main objects.",
    "Describe the shapes and appearance of the objects.",
    "Mention any event or change that happens over time.",
    "Be concise yet descriptive.",
    "Focus on what makes this video different from similar videos.",
    "Cover every detail.",
)


class RandomMutation(PromptEngineer):
    """The no-LLM baseline: the best prompt so far with 1..``max_edits`` generic aspect sentences added or removed.

    Args:
        aspects: sentences the mutations add or remove (default: generic captioning aspects, dataset-agnostic).
        add_probability: chance that an edit adds an aspect (else one present is removed; always added when none
            is).
        max_edits: edits per proposal, drawn uniformly from 1..max_edits.
        seed: base seed; round ``r`` draws from ``Random(f"{seed}:{r}")``.
    """

    def __init__(self, aspects: Sequence[str] = GENERIC_ASPECTS, add_probability: float = 0.7, max_edits: int = 2,
                 seed: int = 0) -> None:
        if not aspects:
            raise ValueError("RandomMutation needs at least one aspect sentence")
        if max_edits < 1:
            raise ValueError(f"max_edits must be >= 1, got {max_edits}")
        self.aspects = list(aspects)
        self.add_probability = add_probability
        self.max_edits = max_edits
        self.seed = seed

    @property
    def name(self) -> str:
        return f"random_mutation(seed={self.seed})"

    def propose(self, history: Sequence[ScoredPrompt], round_index: int, num_captions: int,
                context: RoundContext | None = None) -> str:
        """Edits the best prompt; ``context`` is not read (the baseline knows nothing of any video or text)."""
        rng = random.Random(f"{self.seed}:{round_index}")
        prompt = best_prompt(history).prompt
        for _ in range(rng.randint(1, self.max_edits)):
            present = [a for a in self.aspects if a in prompt]
            absent = [a for a in self.aspects if a not in prompt]
            if absent and (not present or rng.random() < self.add_probability):
                prompt = f"{prompt.rstrip()} {rng.choice(absent)}"
            else:
                prompt = re.sub(r"\s+", " ", prompt.replace(rng.choice(present), "")).strip()
        return prompt
