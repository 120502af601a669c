"""Opening files a user may have received from someone else: checkpoints, search-index shards, captioner weights.

Every such file is read with ``torch.load(..., weights_only=True)``: tensors, numbers, strings and plain containers
come back, and a pickled object (which could run any code while it is unpickled) is refused with an error naming the
file. No flag turns this off: the suite writes nothing that needs more, so a file that does was not written by it.

A checkpoint also *names* classes (LightningCLI's ``hyper_parameters._class_path``, nested ``class_path`` entries
such as the backbone, ``datamodule_hyper_parameters._class_path``), and loading it imports and calls them. Before
anything is imported, every class path must lie in the suite's packages (``lightning_modules``, ``datamodules``,
``callbacks``) or Lightning's loggers and callbacks (which configs name), and the class a loader instantiates must be
a subclass of the base it expects (a ``LightningModule`` for the model, a ``LightningDataModule`` for the data).
Methods or data modules of one's own, in a package outside the suite, are allowed by naming that package in the
environment variable ``VTR_EXTRA_CLASS_PACKAGES`` (comma-separated, e.g. ``my_project``): it widens which packages a
checkpoint may name, never what ``torch.load`` accepts.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import lightning as L
import torch

SUITE_PACKAGES = ("lightning_modules", "datamodules", "callbacks")
LIGHTNING_PACKAGES = ("lightning.pytorch.loggers", "lightning.pytorch.callbacks")
# the instantiator LightningCLI records in hyper-parameters (Lightning checks it too; refused here before any load)
INSTANTIATORS = frozenset({"lightning.pytorch.cli.instantiate_module"})
CLASS_PATH_KEYS = ("class_path", "_class_path")
EXTRA_PACKAGES_ENV = "VTR_EXTRA_CLASS_PACKAGES"

T = TypeVar("T")
M = TypeVar("M", bound=L.LightningModule)

RESAVE = ("If it comes from a source you trust, re-save it with plain tensors: load it in Python and torch.save() a "
          "dict of tensors, numbers, strings, lists and dicts (the suite's own checkpoints are such files). Files "
          "from others are never loaded with weights_only=False here.")


class UntrustedFileError(ValueError):
    """A file that needs pickled code to load, or names a class outside the suite's packages."""


class ChecksumMismatchError(ValueError):
    """The file is not the one an index (or another record) was built with."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(f"{path}: sha256 {actual[:12]}, expected {expected[:12]}")
        self.path, self.expected, self.actual = path, expected, actual


def package_allow_list() -> tuple[str, ...]:
    """The packages whose classes a file may name: the suite's, Lightning's loggers and callbacks, and those the user
    adds with ``VTR_EXTRA_CLASS_PACKAGES``."""
    extra = [p.strip() for p in os.environ.get(EXTRA_PACKAGES_ENV, "").split(",") if p.strip()]
    bad = [p for p in extra if not all(part.isidentifier() for part in p.split("."))]
    if bad:
        raise ValueError(f"environment variable {EXTRA_PACKAGES_ENV}: {bad} are not dotted package names (give "
                         "comma-separated names such as my_project or my_project.models)")
    return (*SUITE_PACKAGES, *LIGHTNING_PACKAGES, *extra)


def allowed_packages() -> str:
    return ", ".join(package_allow_list())


def _in_allowed_package(module: str) -> bool:
    return any(module == pkg or module.startswith(pkg + ".") for pkg in package_allow_list())


def _why_refused(exc: BaseException) -> str:
    """The one line of torch's refusal that says what the file holds (its full message suggests weights_only=False,
    which this module never does)."""
    text = str(exc)
    found = re.search(r"GLOBAL (\S+)", text)  # "Unsupported global: GLOBAL x.y", "unsupported GLOBAL x.y whose ..."
    if found:
        return f"it holds a pickled reference to {found.group(1)}"
    found = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
    return f"torch's weights-only unpickler: {found.group(1).strip()}" if found else "it holds pickled objects"


def load_tensors(source: str | Path | IO[bytes], map_location: Any = "cpu", what: str = "file",
                 name: str | Path | None = None) -> Any:
    """``torch.load(source, weights_only=True)``; a file that needs more is refused with an error that names it
    (``name``, default ``source``) and says what to do."""
    label = name if name is not None else source
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UntrustedFileError(f"{what} {label} cannot be loaded with weights_only=True ({_why_refused(exc)}): a "
                                 "file that needs more than tensors and plain data could run code while loading, so "
                                 f"it is refused. {RESAVE}") from None
    except OSError:
        raise  # missing, unreadable: the message names the file
    except Exception as exc:  # a damaged or foreign file fails in many ways inside torch.load
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"{what} {label} is not a file torch.load reads ({type(exc).__name__}: {first[:200]}); is "
                         "it truncated or of another format?") from None


# ---------------------------------------------------------------------------------------------------- class paths
def check_class_path(class_path: object, where: str) -> tuple[str, str]:
    """(module, name) of a class path in the allowed packages, ``module`` empty for a bare class name (looked up in
    the suite's packages); nothing is imported."""
    if not isinstance(class_path, str) or not class_path or not all(
            part.isidentifier() for part in class_path.split(".")):
        raise UntrustedFileError(f"{where}: class path {class_path!r} is not a dotted Python name")
    module, _, name = class_path.rpartition(".")
    if not module or _in_allowed_package(module):
        return module, name
    raise UntrustedFileError(f"{where} names the class {class_path!r}, outside the suite's packages "
                             f"({allowed_packages()}): refused before importing it (loading the file would import "
                             "and call it). If it is a class of your own package, add the package to "
                             f"{EXTRA_PACKAGES_ENV}")


def _walk_class_paths(tree: Any, trail: str) -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            here = f"{trail}.{key}" if trail else str(key)
            if key in CLASS_PATH_KEYS or key == "_instantiator":
                yield here, value
            yield from _walk_class_paths(value, here)
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            yield from _walk_class_paths(value, f"{trail}[{i}]")


def _defined_in_allowed_package(cls: type) -> bool:
    return _in_allowed_package(cls.__module__ or "")


def _import_class(class_path: str, where: str) -> Any:
    module, name = check_class_path(class_path, where)
    if module:
        try:
            return getattr(importlib.import_module(module), name, None)
        except ImportError as exc:
            raise UntrustedFileError(f"{where}: class path {class_path!r} does not import ({exc})") from None
    for package in SUITE_PACKAGES:  # a bare name, as LightningCLI's short class names
        found = getattr(importlib.import_module(package), name, None)
        if found is not None:
            return found
    return None


def resolve_class(class_path: object, base: type[T], where: str) -> type[T]:
    """The class a file names, checked before import (package allow-list) and after (a class defined in those
    packages and a subclass of ``base``)."""
    cls = _import_class(class_path, where)  # type: ignore[arg-type]  (checked there)
    if not (isinstance(cls, type) and _defined_in_allowed_package(cls) and issubclass(cls, base)):
        raise UntrustedFileError(f"{where}: {class_path!r} is not a {base.__module__}.{base.__qualname__} subclass "
                                 f"defined in the suite's packages ({allowed_packages()})")
    return cls


def check_class_paths(tree: Any, where: str) -> None:
    """Every ``class_path`` / ``_class_path`` in ``tree`` (nested: the backbone's, a loss term's, ...) is a class of
    the allowed packages, and an ``_instantiator`` is LightningCLI's."""
    for trail, value in _walk_class_paths(tree, ""):
        if trail.endswith("_instantiator"):
            if value not in INSTANTIATORS:
                raise UntrustedFileError(f"{where}: {trail} names {value!r}, not LightningCLI's instantiator "
                                         f"({', '.join(sorted(INSTANTIATORS))}): refused")
            continue
        cls = _import_class(value, f"{where} {trail}")
        if not (isinstance(cls, type) and _defined_in_allowed_package(cls)):
            raise UntrustedFileError(f"{where} {trail}: {value!r} is not a class defined in the suite's packages "
                                     f"({allowed_packages()})")


# ---------------------------------------------------------------------------------------------------- checkpoints
@dataclass
class CheckedCheckpoint:
    """What a checkpoint says about itself once checked: its hyper-parameters and the classes they name."""

    path: Path
    sha256: str
    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    datamodule_hyper_parameters: dict[str, Any] = field(default_factory=dict)
    module_class: type[L.LightningModule] | None = None
    datamodule_class: type[L.LightningDataModule] | None = None


def _sha256(fh: IO[bytes], chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    while block := fh.read(chunk):
        digest.update(block)
    fh.seek(0)
    return digest.hexdigest()


def _check_loaded(raw: Any, path: Path, sha256: str, module_base: type[L.LightningModule]) -> CheckedCheckpoint:
    if not isinstance(raw, dict):
        raise ValueError(f"checkpoint {path} holds a {type(raw).__name__}, not a Lightning checkpoint (a dict with "
                         "state_dict and hyper_parameters)")
    checked = CheckedCheckpoint(path, sha256)
    for key, base in (("hyper_parameters", module_base), ("datamodule_hyper_parameters", L.LightningDataModule)):
        hparams = raw.get(key)
        if hparams is None:
            continue
        if not isinstance(hparams, dict):
            raise ValueError(f"checkpoint {path}: {key} is a {type(hparams).__name__}, not a dict")
        check_class_paths(hparams, f"checkpoint {path} [{key}]")
        if "_class_path" in hparams:
            cls = resolve_class(hparams["_class_path"], base, f"checkpoint {path} [{key}._class_path]")
            if key == "hyper_parameters":
                checked.module_class = cls  # type: ignore[assignment]
            else:
                checked.datamodule_class = cls  # type: ignore[assignment]
        setattr(checked, key, hparams)
    return checked


def check_checkpoint(path: str | Path, module_base: type[L.LightningModule] = L.LightningModule
                     ) -> CheckedCheckpoint:
    """Load a checkpoint with ``weights_only=True`` and check every class it names (``module_base`` for the model's
    ``_class_path``); nothing is instantiated."""
    path = Path(path).expanduser()
    with path.open("rb") as fh:
        sha256 = _sha256(fh)
        raw = load_tensors(fh, "cpu", "checkpoint", path)
    return _check_loaded(raw, path, sha256, module_base)


def load_lightning_module(path: str | Path, base: type[M], map_location: Any = "cpu",
                          expected_sha256: str | None = None, require_class_path: bool = False
                          ) -> tuple[M, CheckedCheckpoint]:
    """A ``LightningModule`` of class ``base`` (or the subclass the checkpoint names) from a checkpoint a user may
    have received: loaded with ``weights_only=True``, every class path checked before import, Lightning's own load
    also with ``weights_only=True``. Both loads read the same open file, whose sha256 (checked against
    ``expected_sha256`` when given) is returned with the hyper-parameters. ``require_class_path``: the checkpoint
    must name its class (``base`` is abstract, e.g. any retrieval method)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    with path.open("rb") as fh:
        before = os.fstat(fh.fileno())
        sha256 = _sha256(fh)
        if expected_sha256 is not None and sha256 != expected_sha256:
            raise ChecksumMismatchError(path, expected_sha256, sha256)
        raw = load_tensors(fh, "cpu", "checkpoint", path)
        checked = _check_loaded(raw, path, sha256, base)
        del raw  # the module's own load follows: never two copies of the weights at once
        if checked.module_class is None and require_class_path:
            raise ValueError(f"checkpoint {path} does not name its class (no hyper_parameters._class_path): only "
                             "checkpoints written by python main.py fit (LightningCLI) are loaded here")
        cls = checked.module_class or base
        fh.seek(0)
        module = cls.load_from_checkpoint(fh, map_location=map_location, weights_only=True)
        after = os.fstat(fh.fileno())
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise ValueError(f"checkpoint {path} changed while it was loaded; load it again once it is complete")
    return module, checked  # type: ignore[return-value]
