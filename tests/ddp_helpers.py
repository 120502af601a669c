"""Importable pieces for the 2-process DDP test (spawned workers must be able to import them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.base import collate_pairs
from lightning_modules.backbones import OpenCLIPBackbone
from lightning_modules.clip4clip import CLIP4Clip

GLOBAL_BATCH = 8


class FixedPairs(Dataset):
    """Eight fixed (text, video) pairs; the same tensors in every process."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.frames = torch.randint(0, 256, (GLOBAL_BATCH, 4, 3, 64, 64), generator=g, dtype=torch.uint8)
        self.texts = [f"clip number {i} shows a {c} thing" for i, c in enumerate("abcdefgh")]

    def __len__(self) -> int:
        return GLOBAL_BATCH

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"text_index": i, "video_index": i, "text": self.texts[i], "video_id": f"v{i}",
                "frames": self.frames[i], "mask": torch.ones(4, dtype=torch.bool)}


class RecordingCLIP4Clip(CLIP4Clip):
    """Writes the first step's loss and the (DDP-averaged) gradients of every rank to ``out_dir``."""

    def __init__(self, out_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_dir = out_dir

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self._loss = loss.detach()
        return loss

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        grads = {n: p.grad.detach().clone() for n, p in self.named_parameters() if p.grad is not None}
        torch.save({"loss": self._loss, "grads": grads, "rank": self.global_rank},
                   Path(self.out_dir) / f"rank{self.global_rank}_ws{self.trainer.world_size}.pt")


def run_one_step(out_dir: str, devices: int) -> None:
    torch.manual_seed(0)
    backbone = OpenCLIPBackbone("vtr-tiny-clip", pretrained=None, max_words=16)
    model = RecordingCLIP4Clip(out_dir=out_dir, backbone=backbone, sim_header="seqTransf", temporal_layers=1,
                               temporal_heads=2, lr=1e-3, write_artifacts=False)
    per_device = GLOBAL_BATCH // devices
    loader = DataLoader(FixedPairs(), batch_size=per_device, shuffle=False, collate_fn=collate_pairs)
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
                        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=loader)
