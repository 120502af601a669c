"""A retriever checkpoint written by ``main.py fit``: the method (from LightningCLI's saved class path), its data
settings (frames, image size, reader, auxiliary captions) and the hash that ties an index to it.

Checkpoints and indexes travel between people, so a checkpoint is opened as untrusted
(``lightning_modules.safe_load``): ``weights_only=True``, and the classes it names are checked before import."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightning_modules.base import BaseRetrievalModule
from lightning_modules.safe_load import load_lightning_module


class IndexMismatchError(ValueError):
    """An index folder was built with another checkpoint or other settings than the ones given."""


class NoSearchEmbeddingError(TypeError):
    """The checkpoint's method declares no query-independent search embedding, so it cannot be indexed."""


@dataclass
class RetrieverCheckpoint:
    """A loaded retriever (in eval mode) and what an index records about it."""

    path: Path
    sha256: str
    module: BaseRetrievalModule
    data: dict[str, Any]  # the data module's hyper-parameters at training time ({} when not saved)
    data_class: type[L.LightningDataModule] | None = None  # the data module it was trained on (checked class)

    @property
    def method(self) -> str:
        return type(self.module).__name__


def require_search_embedding(module: BaseRetrievalModule, ckpt: str | Path) -> None:
    """Raise ``NoSearchEmbeddingError`` unless the method declares both search vectors: ``search_keys`` (the feature
    names whose cosine is its first stage) or its own ``query_embedding`` and ``index_embedding``.

    Checked on the class, before any video is decoded: the base's hooks only fail when first called, which in
    ``index`` is after the first batch of the folder has been read and encoded.
    """
    cls = type(module)
    declared = {hook: getattr(cls, hook) is not getattr(BaseRetrievalModule, hook)
                for hook in ("query_embedding", "index_embedding")}
    if cls.search_keys is not None or all(declared.values()):
        return
    half = [hook for hook, own in declared.items() if own]
    why = (f"it overrides only {half[0]}" if half else "it has neither search_keys nor its own query_embedding and "
           "index_embedding")
    raise NoSearchEmbeddingError(
        f"{cls.__name__} ({cls.__module__}, checkpoint {ckpt}) defines no search embedding ({why}), so its videos "
        "cannot be put in a vector index; nothing was decoded. If its score is the cosine of one text vector and one "
        "video vector, subclass lightning_modules.embedding.EmbeddingRetrievalModule and implement embed_text and "
        "embed_video (the search hooks come with it), or set search_keys = (<text feature>, <video feature>) to the "
        "two features of encode_text / encode_video whose cosine is its score; otherwise override both "
        "query_embedding and index_embedding with a query-independent first stage (the method's own similarity then "
        "re-scores its top candidates)")


def load_retriever(path: str | Path, device: str | torch.device = "cpu",
                   expected_sha256: str | None = None) -> RetrieverCheckpoint:
    """Load any method's checkpoint; the class comes from the checkpoint itself (LightningCLI's ``_class_path``,
    which must name a ``BaseRetrievalModule`` of the suite). ``expected_sha256``: refuse another file (an index's
    checkpoint), checked on the bytes that are loaded."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found (a .ckpt written by python main.py fit, e.g. "
                                "runs/<name>/version_0/checkpoints/best-*.ckpt)")
    module, checked = load_lightning_module(path, BaseRetrievalModule, device, expected_sha256,
                                            require_class_path=True)
    module.eval()
    data = {k: v for k, v in checked.datamodule_hyper_parameters.items() if not k.startswith("_")}
    return RetrieverCheckpoint(path.resolve(), checked.sha256, module, data, checked.datamodule_class)
