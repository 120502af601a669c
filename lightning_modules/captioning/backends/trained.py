"""A captioner trained by the suite (SFT or CaRe-DPO's DG-DPO) as a caption backend, so ``main.py predict`` writes
its captions for every video like any other captioner's."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from datamodules.batch import normalize_frames
from lightning_modules.captioning.backends.base import CaptionBackend, CaptionOutput, CaptionRequest


class TrainedCaptioner(nn.Module, CaptionBackend):
    """Greedy (or sampled) captions from a ``CaptionerTraining`` checkpoint (``captioning/training.py``).

    The frames go through the checkpoint's frozen video tower, its projector and its LM; the ``Captioner``'s prompt
    must be the one the checkpoint was trained with (an error names both otherwise).

    Args:
        checkpoint: the ``CaptionerTraining`` checkpoint (``<run>/checkpoints/last.ckpt``).
        temperature: 0 is greedy.
        top_p: nucleus sampling when sampling (null: none).
        max_new_tokens: generation length (null: the captioner's default).
        batch_size: videos per generation call.
    """

    needs_pixels = True

    def __init__(self, checkpoint: str, temperature: float = 0.0, top_p: float | None = None,
                 max_new_tokens: int | None = None, batch_size: int = 32) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.model: Any = None

    @property
    def model_name(self) -> str:
        return f"trained-captioner({self.checkpoint})"

    def setup(self, device: Any, datamodule: Any | None = None) -> None:
        from lightning_modules.captioning.training import CaptionerTraining
        from lightning_modules.safe_load import load_lightning_module

        # a trained captioner may come from someone else: weights only, class paths checked before import
        self.model, _ = load_lightning_module(self.checkpoint, CaptionerTraining, map_location=device)
        self.model.eval()

    def record_extras(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "temperature": self.temperature}

    def lineage(self) -> tuple[dict[str, Any] | None, str | None]:
        """The lineage of the fit that trained the checkpoint (its training and selection splits, its preference
        store and that store's scorer), so captions inherit whatever test data the captioner saw."""
        if self.model is None:
            raise RuntimeError("TrainedCaptioner.setup() was not called")
        found = self.model.fit_lineage_node()
        if found is None:
            return None, f"checkpoint {self.checkpoint} has no lineage record (saved before lineage was recorded)"
        return found, None

    @torch.no_grad()
    def generate(self, requests: list[CaptionRequest]) -> list[CaptionOutput]:
        if self.model is None:
            raise RuntimeError("TrainedCaptioner.setup() was not called")
        model = self.model
        tower = model.backbone
        for req in requests:
            if req.prompt != model.prompt:
                raise ValueError(f"the Captioner's prompt {req.prompt!r} differs from the one {self.checkpoint} was "
                                 f"trained with ({model.prompt!r}); set model.init_args.prompt to it")
            if not req.images:
                raise ValueError(f"video {req.video_id}: no frames to caption")
        outputs: list[CaptionOutput] = []
        device = next(model.parameters()).device
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start:start + self.batch_size]
            length = max(len(r.images) for r in chunk)
            h, w = chunk[0].images[0].shape[:2]
            frames = torch.zeros(len(chunk), length, 3, h, w, dtype=torch.uint8)
            mask = torch.zeros(len(chunk), length, dtype=torch.bool)
            for row, req in enumerate(chunk):
                stack = torch.from_numpy(np.stack(req.images)).permute(0, 3, 1, 2)
                frames[row, :len(req.images)] = stack
                mask[row, :len(req.images)] = True
            visual = normalize_frames(frames.to(device), tower.image_mean, tower.image_std)
            n = max(r.num_captions for r in chunk)
            texts = model.captioner.generate(visual, [model.prompt] * len(chunk), max_new_tokens=self.max_new_tokens,
                                             temperature=self.temperature, top_p=self.top_p,
                                             num_return_sequences=n, frame_mask=mask.to(device))
            for row, req in enumerate(chunk):
                outputs.append(CaptionOutput(texts[row * n:row * n + req.num_captions]))
        return outputs
