"""A text-only LLM as the "captioner": it rewrites the video's annotated text and never sees a frame.

Conical embedding optimisation's slides compare their video-LLM supplements with a text-only rewrite of the query
(OpenChat: "does not yield notable improvements", "ineffectiveness of simple textual rewriting"). This backend gives
that comparison row with any :class:`~lightning_modules.captioning.backends.base.TextGenerator` (SmolLM2-135M-Instruct
offline, an OpenAI-compatible chat model through ``OpenAICompatible``'s text side, any transformers causal LM): the
prompt must carry the ``{text}`` placeholder, which the ``Captioner`` fills with the video's first annotated text.
"""

from __future__ import annotations

from typing import Any

from lightning_modules.captioning.backends.base import CaptionBackend, CaptionOutput, CaptionRequest, TextGenerator


class TextRewrite(CaptionBackend):
    """Captions written by a text-only generator from the prompt alone (no pixels).

    Args:
        generator: the text LLM (``class_path``/``init_args`` in YAML, e.g. ``SmolLM2``).
        max_new_tokens: length limit of each rewrite.
        attempts: generations tried per request before an empty answer is an error (each with another sampling
            seed when the generator samples).
    """

    needs_pixels = False

    def __init__(self, generator: TextGenerator, max_new_tokens: int = 60, attempts: int = 3) -> None:
        self.generator = generator
        self.max_new_tokens = max_new_tokens
        self.attempts = max(1, attempts)

    @property
    def model_name(self) -> str:
        return f"text-only rewrite: {self.generator.model_name}"

    def setup(self, device: Any, datamodule: Any | None = None) -> None:
        load = getattr(self.generator, "load", None)
        if callable(load):
            load()

    def generate(self, requests: list[CaptionRequest]) -> list[CaptionOutput]:
        for req in requests:
            if req.context_text is None:
                raise ValueError(f"TextRewrite rewrites a video's text, but the prompt for video {req.video_id!r} has "
                                 "no {text} placeholder; add one to model.init_args.prompt")
        answers: list[str | None] = [None] * len(requests)
        for attempt in range(self.attempts):
            todo = [i for i, a in enumerate(answers) if not a]
            if not todo:
                break
            if hasattr(self.generator, "seed") and attempt > 0:  # a sampling generator: another draw
                self.generator.seed += 1000
            outs = self.generator.complete([[{"role": "user", "content": requests[i].prompt}] for i in todo],
                                           max_new_tokens=self.max_new_tokens)
            for i, text in zip(todo, outs, strict=True):
                line = next((ln.strip().strip('"').strip() for ln in text.splitlines() if ln.strip()), "")
                answers[i] = line or None
        empty = [requests[i].video_id for i, a in enumerate(answers) if not a]
        if empty:
            raise RuntimeError(f"{self.generator.model_name} answered with empty text {self.attempts} times for videos "
                               f"{empty[:5]}; raise max_new_tokens or change the prompt")
        return [CaptionOutput([a or ""]) for a in answers]
