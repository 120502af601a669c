"""A retriever checkpoint written by ``main.py fit``: the method (from LightningCLI's saved class path), its data
settings (frames, image size, reader, auxiliary captions) and the hash that ties an index to it."""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lightning_modules.base import BaseRetrievalModule


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class RetrieverCheckpoint:
    """A loaded retriever (in eval mode) and what an index records about it."""

    path: Path
    sha256: str
    module: BaseRetrievalModule
    data: dict[str, Any]  # the data module's hyper-parameters at training time ({} when not saved)

    @property
    def method(self) -> str:
        return type(self.module).__name__


def load_retriever(path: str | Path, device: str | torch.device = "cpu") -> RetrieverCheckpoint:
    """Load any method's checkpoint; the class comes from the checkpoint itself (LightningCLI's ``_class_path``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found (a .ckpt written by python main.py fit, e.g. "
                                "runs/<name>/version_0/checkpoints/best-*.ckpt)")
    raw = torch.load(path, map_location="cpu", weights_only=False)
    hparams = raw.get("hyper_parameters", {}) if isinstance(raw, dict) else {}
    if "_class_path" not in hparams:
        raise ValueError(f"checkpoint {path} does not name its method (no hyper_parameters._class_path): search loads "
                         "checkpoints written by python main.py fit (LightningCLI)")
    module_name, _, class_name = str(hparams["_class_path"]).rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseRetrievalModule)):
        raise TypeError(f"checkpoint {path} holds a {hparams['_class_path']}, not a retrieval method")
    module = cls.load_from_checkpoint(path, map_location=device)
    module.eval()
    data = {k: v for k, v in raw.get("datamodule_hyper_parameters", {}).items() if not k.startswith("_")}
    return RetrieverCheckpoint(path.resolve(), file_sha256(path), module, data)
