"""Importable pieces for the 2-process DDP test (spawned workers must be able to import them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.collate import collate_pairs
from lightning_modules.backbones import OpenCLIPBackbone
from lightning_modules.clip4clip import CLIP4Clip
from lightning_modules.conical import ConicalEmbedding
from lightning_modules.excae import ExCae

GLOBAL_BATCH = 8


class FixedPairs(Dataset):
    """Eight fixed (text, video) pairs; the same tensors in every process.

    The items in ``failed`` come back as the data module's decode-failure markers (``on_decode_error:
    skip``), which ``collate_pairs`` drops from the batch.
    """

    def __init__(self, failed: frozenset[int] = frozenset(), multi_captions: bool = False,
                 supplements: bool = False) -> None:
        g = torch.Generator().manual_seed(0)
        self.frames = torch.randint(0, 256, (GLOBAL_BATCH, 4, 3, 64, 64), generator=g, dtype=torch.uint8)
        self.texts = [f"clip number {i} shows a {c} thing" for i, c in enumerate("abcdefgh")]
        self.failed = failed
        self.multi_captions = multi_captions  # ExCae's K captions per video (2 or 3, so the slots get padded)
        self.supplements = supplements  # conical: a supplement per video and one flipped copy of each clip

    def __len__(self) -> int:
        return GLOBAL_BATCH

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"text_index": i, "video_index": i, "text": self.texts[i], "video_id": f"v{i}"}
        if i in self.failed:
            return {**item, "failed": "VideoDecodeError: corrupt", "empty_shape": (4, 3, 64, 64)}
        item = {**item, "frames": self.frames[i], "mask": torch.ones(4, dtype=torch.bool)}
        if self.multi_captions:
            item["aux"] = {"multi": [f"caption {k} of clip {i}, a {'abcdefgh'[i]} thing" for k in range(2 + i % 2)]}
        if self.supplements:
            item["aux"] = {"supplement": [f"the {'abcdefgh'[i]} thing of clip {i} turns around slowly"]}
            item["aux_prompt"] = {"supplement": "Describe this video."}
            item["augmented_frames"] = torch.flip(self.frames[i], dims=(-1,))[None]
            item["augmentations"] = ["hflip"]
        return item


class _RecordsFirstStep:
    """Writes the step's loss (None when skipped) and gradients of every rank to ``out_dir``."""

    out_dir: str

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        loss = outputs["loss"].detach() if outputs else None
        grads = {n: p.grad.detach().clone() for n, p in self.named_parameters() if p.grad is not None}
        torch.save({"loss": loss, "grads": grads, "rank": self.global_rank, "rows": len(batch)},
                   Path(self.out_dir) / f"rank{self.global_rank}_ws{self.trainer.world_size}.pt")


class RecordingCLIP4Clip(_RecordsFirstStep, CLIP4Clip):
    """Writes the first step's loss (None when the step was skipped) and the (DDP-averaged) gradients of every
    rank to ``out_dir``."""

    def __init__(self, out_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_dir = out_dir


def items_of_rank(rank: int, world_size: int = 2) -> list[int]:
    """The ``FixedPairs`` items Lightning's injected ``DistributedSampler`` gives ``rank`` (epoch 0)."""
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))  # what Lightning seeds it with, in the spawned workers too
    return list(DistributedSampler(range(GLOBAL_BATCH), num_replicas=world_size, rank=rank, shuffle=True,  # type: ignore[arg-type]
                                   seed=seed))


class RecordingExCae(_RecordsFirstStep, ExCae):
    """ExCae that records like ``RecordingCLIP4Clip`` (the top-2 routing leaves experts without gradient)."""

    def __init__(self, out_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_dir = out_dir


class RecordingConical(_RecordsFirstStep, ConicalEmbedding):
    """Conical embedding optimisation that records like ``RecordingCLIP4Clip`` (three terms, three scales, a gate)."""

    def __init__(self, out_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_dir = out_dir


def run_one_step(out_dir: str, devices: int, failed: frozenset[int] = frozenset(), method: str = "clip4clip") -> None:
    torch.manual_seed(0)
    backbone = OpenCLIPBackbone("vtr-tiny-clip", pretrained=None, max_words=16)
    if method == "excae":
        model: L.LightningModule = RecordingExCae(out_dir=out_dir, backbone=backbone, num_experts=6, expert_heads=2,
                                                  expert_ffn=32, expert_dropout=0.0, lr=1e-3, write_artifacts=False)
    elif method == "conical":
        model = RecordingConical(out_dir=out_dir, backbone=backbone, text_fusion="gate", logit_scale_init=10.0,
                                 lr=1e-3, write_artifacts=False)
    else:
        model = RecordingCLIP4Clip(out_dir=out_dir, backbone=backbone, sim_header="seqTransf", temporal_layers=1,
                                   temporal_heads=8, lr=1e-3, write_artifacts=False)
    per_device = GLOBAL_BATCH // devices
    # under DDP Lightning shards training data with a shuffling DistributedSampler: see ``items_of_rank``
    loader = DataLoader(FixedPairs(failed, multi_captions=method == "excae", supplements=method == "conical"),
                        batch_size=per_device, shuffle=False, collate_fn=collate_pairs)
    strategy = "auto"
    if devices > 1:
        strategy = "ddp_spawn_find_unused_parameters_true" if method == "excae" else "ddp_spawn"
    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy,
                        max_steps=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(model, train_dataloaders=loader)
