"""register_methods: a method file dropped into the package is imported and its class exported by name, so
LightningCLI resolves the short class_path and safe_load resolves the package-level name; a clash is refused."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import lightning as L
import pytest
from jsonargparse import ArgumentParser

import lightning_modules
from lightning_modules.embedding import EmbeddingRetrievalModule
from lightning_modules.registry import register_methods
from lightning_modules.safe_load import EXTRA_PACKAGES_ENV, resolve_class

METHOD = '''
import lightning as L
from torch import nn


class {name}(L.LightningModule):
    """A method of the drop-in package."""

    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.layer = nn.Linear(width, width)


class _Helper(L.LightningModule):
    """Private: not exported."""


class NotAModule:
    """Not a LightningModule: not exported."""
'''


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """An importable package ``dropin_<n>`` (its own name per test: classes stay registered as subclasses)."""
    name = f"dropin_{tmp_path.name.replace('-', '_')}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text("__all__ = []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, folder
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def _import(name: str) -> ModuleType:
    importlib.invalidate_caches()
    return importlib.import_module(name)


def test_a_dropped_in_file_is_exported_and_resolves_by_its_short_name(package: tuple[str, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    name, folder = package
    (folder / "max_pool.py").write_text(textwrap.dedent(METHOD.format(name="MaxPoolMethod")))
    (folder / "_private.py").write_text("raise ImportError('a private module is never imported')\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "__init__.py").write_text("raise ImportError('a subpackage exports its own classes')\n")
    pkg = _import(name)
    assert not hasattr(pkg, "MaxPoolMethod")  # before: only its dotted path would work
    assert register_methods(pkg) == ["MaxPoolMethod"]
    assert pkg.MaxPoolMethod.__module__ == f"{name}.max_pool" and pkg.__all__ == ["MaxPoolMethod"]
    assert not hasattr(pkg, "NotAModule") and not hasattr(pkg, "_Helper")
    assert register_methods(pkg) == []  # a second call adds nothing
    # LightningCLI's resolution of a short class_path (jsonargparse: among the imported LightningModule subclasses)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=L.LightningModule)
    parsed = parser.parse_args(["--model", '{"class_path": "MaxPoolMethod", "init_args": {"width": 4}}'])
    assert parsed.model.class_path.endswith("MaxPoolMethod")
    model = parser.instantiate(parsed).model
    assert isinstance(model, pkg.MaxPoolMethod) and model.layer.in_features == 4
    # a checkpoint naming <package>.MaxPoolMethod (the path LightningCLI records for an exported class)
    monkeypatch.setenv(EXTRA_PACKAGES_ENV, name)
    assert resolve_class(f"{name}.MaxPoolMethod", L.LightningModule, "ckpt") is pkg.MaxPoolMethod


def test_two_classes_of_one_name_are_an_error_naming_both_files(package: tuple[str, Path]) -> None:
    name, folder = package
    (folder / "first.py").write_text(textwrap.dedent(METHOD.format(name="SameName")))
    (folder / "second.py").write_text(textwrap.dedent(METHOD.format(name="SameName")))
    with pytest.raises(ImportError, match=r"two things named SameName: .*first\.py and .*second\.py"):
        register_methods(_import(name))


def test_the_suite_exports_its_method_classes_by_name() -> None:
    assert lightning_modules.EmbeddingRetrievalModule is EmbeddingRetrievalModule
    assert resolve_class("lightning_modules.EmbeddingRetrievalModule", L.LightningModule, "ckpt") \
        is EmbeddingRetrievalModule
    assert register_methods(lightning_modules) == []  # the package did it when it was imported
