"""A minimal host for the ``BaseRetrievalModule`` mixins (evaluation, artifacts, search hooks, distributed gathering):
a dot-product similarity of ``text`` and ``video`` vectors and a stand-in trainer holding what the mixins read, so
each mixin is tested without a backbone or a Trainer run (the CLI tests run them inside the real module)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from datamodules.annotations import EvalIndex
from lightning_modules.artifacts import TestArtifactsMixin
from lightning_modules.distributed import DistributedGatherMixin
from lightning_modules.evaluation import EvaluationMixin
from lightning_modules.scoring import Features
from lightning_modules.search_hooks import SearchHooksMixin


class FakeEvalData:
    """The data module calls the evaluation makes: the split's eval index and its decode failures."""

    def __init__(self, text_to_video: list[int], num_videos: int, failed: list[int] | None = None) -> None:
        self.index = EvalIndex(text_ids=[f"t{i}" for i in range(len(text_to_video))],
                               texts=[f"text {i}" for i in range(len(text_to_video))], text_to_video=text_to_video,
                               video_ids=[f"v{i}" for i in range(num_videos)])
        self.failed = failed or []

    def eval_index(self, stage: str) -> EvalIndex:
        return self.index

    def eval_failures(self, stage: str) -> list[int]:
        return self.failed


class Hparams(dict):
    """Hyper-parameters as a LightningModule holds them: a dict with attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


class Host(EvaluationMixin, TestArtifactsMixin, SearchHooksMixin, DistributedGatherMixin):
    """The mixins on a dot-product retriever with a stand-in trainer (world size 1)."""

    search_keys = ("text", "video")

    def __init__(self, data: FakeEvalData, text_chunk: int = 2, video_chunk: int = 3, **trainer: Any) -> None:
        self.hparams = Hparams(eval_text_chunk=text_chunk, eval_video_chunk=video_chunk, postprocess=[],
                               write_artifacts=False)
        self.trainer = SimpleNamespace(**{"world_size": 1, "datamodule": data, "sanity_checking": False,
                                          "fast_dev_run": 0, "limit_val_batches": 1.0, "limit_test_batches": 1.0,
                                          "is_global_zero": True, "callbacks": [], **trainer})
        self.device = torch.device("cpu")
        self.logged: dict[str, float] = {}
        self.lineage_resets = 0
        self._reset_eval_store()

    def similarity(self, text_feats: Features, video_feats: Features) -> Tensor:
        return text_feats["text"] @ video_feats["video"].T

    def text_tile_order(self, text_feats: Features) -> Tensor | None:
        return None

    def fuse_views(self, views: dict[str, Tensor]) -> Tensor:
        return sum(views.values())  # type: ignore[return-value]

    def log(self, name: str, value: float, **kwargs: Any) -> None:
        self.logged[name] = value

    def reset_lineage_reads(self) -> None:
        self.lineage_resets += 1


def one_hot(rows: list[int], width: int) -> Tensor:
    """Unit vectors: row ``i`` is the ``rows[i]``-th axis (a text and its video then score 1, others 0)."""
    return torch.nn.functional.one_hot(torch.tensor(rows), width).float()
