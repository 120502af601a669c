"""The suite uses only Lightning's public API: no private name imported, no private method overridden or called, no
private attribute read or set (checked statically, with ``ast``, over every module of the suite and its tests).

A private Lightning name is one that starts with a single underscore, in a ``lightning`` module path or as an attribute
of the Lightning classes the suite subclasses or is handed (LightningModule, LightningDataModule, Callback, Trainer,
LightningCLI, SaveConfigCallback, loggers, ModelCheckpoint). Such names change between Lightning releases without
notice, and the suite pins a Lightning version but has to survive the next one.

Three rules, each a finding with its file and line:

* an import from a ``lightning`` module of a name starting with ``_``, or of a module whose path has such a part;
* inside a class with a Lightning class in its MRO: a method named like a private attribute of that Lightning class
  (an override), or ``self._x`` / ``super()._x`` where ``_x`` is one of its private attributes;
* inside any other class (a mixin of a LightningModule): ``self._x`` where ``_x`` is a private attribute of a
  Lightning class and the class itself neither defines nor assigns it;
* anywhere else: ``obj._x`` (``obj`` not ``self``) where ``_x`` is a private attribute of one of those classes or
  their instances (``module._trainer``, ``trainer._checkpoint_connector``...).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from pathlib import Path
from types import ModuleType

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, WandbLogger

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("lightning_modules", "datamodules", "callbacks", "experiments", "benchmarks", "vtr", "tests")
LIGHTNING_ROOTS = ("lightning", "pytorch_lightning", "lightning_fabric", "lightning_utilities")
HANDED_CLASSES = (L.LightningModule, L.LightningDataModule, L.Callback, L.Trainer, LightningCLI, SaveConfigCallback,
                  ModelCheckpoint, CSVLogger, WandbLogger)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_lightning(module: str) -> bool:
    return module.split(".")[0] in LIGHTNING_ROOTS


def private_names(cls: type) -> set[str]:
    """The private attributes of a Lightning class: its class attributes and those a bare instance sets."""
    names = {n for n in dir(cls) if _private(n)}
    if cls is L.Trainer:
        instance = cls(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    elif cls in (L.LightningModule, L.LightningDataModule, L.Callback):
        instance = cls()
    else:  # built with arguments (LightningCLI would even run): its class attributes only
        return names
    return names | {n for n in vars(instance) if _private(n)}


def _lightning_bases(cls: type) -> list[type]:
    return [base for base in inspect.getmro(cls) if _is_lightning(base.__module__)]


def _suite_files() -> list[Path]:
    files = [REPO / "main.py"]
    for package in PACKAGES:
        files += sorted((REPO / package).rglob("*.py"))
    return files


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def private_lightning_uses(path: Path, module: ModuleType | None, handed: set[str], cache: dict[type, set[str]],
                           where: str) -> list[str]:
    """Every use of a private Lightning name in the file at ``path``, whose classes are ``module``'s
    (``where:line: what``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and _is_lightning(node.module):
            bad = [a.name for a in node.names if _private(a.name)]
            if any(_private(part) for part in node.module.split(".")) or bad:
                found.append(f"{where}:{node.lineno}: from {node.module} import {', '.join(bad) or '...'}")
        elif isinstance(node, ast.Import):
            found += [f"{where}:{node.lineno}: import {a.name}" for a in node.names
                      if _is_lightning(a.name) and any(_private(p) for p in a.name.split("."))]
    # methods and self/super() attributes of classes built on Lightning classes: the real classes, MRO included
    in_lightning_class: set[int] = set()
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    if classes and module is not None:
        for node in classes:
            cls = getattr(module, node.name, None)
            if not isinstance(cls, type) or not _lightning_bases(cls):
                continue
            private = set().union(*(cache.setdefault(b, private_names(b)) for b in _lightning_bases(cls)))
            for item in ast.walk(node):
                in_lightning_class.add(id(item))
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name in private:
                    found.append(f"{where}:{item.lineno}: {node.name} overrides Lightning's {item.name}")
                elif isinstance(item, ast.Attribute) and item.attr in private and _is_self_or_super(item.value):
                    found.append(f"{where}:{item.lineno}: {node.name} uses Lightning's {item.attr}")
    # a mixin (no Lightning base of its own, mixed into a LightningModule): self._x that the class does not define
    for node in classes:
        if id(node) in in_lightning_class:
            continue
        own = {item.name for item in ast.walk(node) if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)}
        own |= {item.attr for item in ast.walk(node) if isinstance(item, ast.Attribute) and _is_self_or_super(
            item.value) and isinstance(item.ctx, ast.Store)}
        for item in ast.walk(node):
            in_lightning_class.add(id(item))
            if isinstance(item, ast.Attribute) and item.attr in handed - own and _is_self_or_super(item.value):
                found.append(f"{where}:{item.lineno}: {node.name} uses Lightning's {item.attr}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in handed and not _is_self_or_super(node.value):
            found.append(f"{where}:{node.lineno}: .{node.attr} (a private attribute of a Lightning object)")
    return found


def _is_self_or_super(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "self") or (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super")


def test_the_checker_finds_each_kind_of_private_use(tmp_path: Path) -> None:
    """Every rule on a sample: an import, an override, a super() call, self and other-object attributes."""
    sample = tmp_path / "private_api_sample.py"
    sample.write_text(
        "import lightning as L\n"
        "from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters\n"
        "from lightning.pytorch.cli import LightningCLI\n"
        "class CLI(LightningCLI):\n"
        "    def _parse_ckpt_path(self):\n"
        "        super()._parse_ckpt_path()\n"
        "class Module(L.LightningModule):\n"
        "    def setup(self, stage):\n"
        "        return self._trainer\n"
        "def attached(module):\n"
        "    return module._trainer is not None\n"
        "class Plain:\n"
        "    def _run(self):\n"  # not Lightning's: a class of its own with a private method of that name
        "        return self._run\n"
        "class GatherMixin:\n"  # mixed into a LightningModule: Lightning's attribute all the same
        "    def gather(self):\n"
        "        return self._trainer\n")
    spec = importlib.util.spec_from_file_location("private_api_sample", sample)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cache: dict[type, set[str]] = {}
    found = private_lightning_uses(sample, module, _handed_private_names(cache), cache, sample.name)
    lines = sorted(int(f.split(":")[1]) for f in found)
    assert lines == [2, 5, 6, 9, 11, 17], found


def _handed_private_names(cache: dict[type, set[str]]) -> set[str]:
    return set().union(*(cache.setdefault(cls, private_names(cls)) for cls in HANDED_CLASSES))


def test_the_suite_uses_no_private_lightning_name() -> None:
    cache: dict[type, set[str]] = {}
    handed = _handed_private_names(cache)
    found = []
    for path in _suite_files():
        if path.name == "test_public_api.py":  # this file names private APIs in its sample
            continue
        # the real classes (MRO included) of each module; a __main__ module would run its program when imported
        module = None if path.name == "__main__.py" else importlib.import_module(_module_name(path))
        found += private_lightning_uses(path, module, handed, cache, str(path.relative_to(REPO)))
    assert found == [], "private Lightning API used:\n" + "\n".join(found)
