"""``lightning_modules.safe_load``: what a file from someone else may hold and name. Planted pickles and planted
modules only create a marker folder in ``tmp_path``. (The entry points that use it: ``tests/test_security.py``.)"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from lightning_modules.safe_load import (
    EXTRA_PACKAGES_ENV,
    ChecksumMismatchError,
    UntrustedFileError,
    check_class_path,
    check_class_paths,
    load_lightning_module,
    load_tensors,
    resolve_class,
)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.mkdir, (str(self.marker),)


def test_plain_data_loads_and_a_pickled_object_is_refused_naming_the_file(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(2), "n": 3, "names": ["a"], "nested": {"x": 1.5, "t": (1, 2)}}, plain)
    assert load_tensors(plain)["names"] == ["a"]
    marker, planted = tmp_path / "ran", tmp_path / "planted.pt"
    torch.save({"w": torch.ones(2), "x": _Payload(marker)}, planted)
    with pytest.raises(UntrustedFileError) as error:
        load_tensors(planted, what="index shard")
    assert not marker.exists()
    message = str(error.value)
    assert message.startswith(f"index shard {planted} ") and "mkdir" in message and "re-save" in message
    not_torch = tmp_path / "notes.txt"
    not_torch.write_text("hello")
    with pytest.raises(ValueError, match=f"{not_torch}.*not a file torch.load reads"):
        load_tensors(not_torch)


def test_class_paths_outside_the_allowed_packages_are_refused_before_import() -> None:
    assert check_class_path("lightning_modules.CLIP4Clip", "x") == ("lightning_modules", "CLIP4Clip")
    assert check_class_path("lightning.pytorch.loggers.CSVLogger", "x")[0] == "lightning.pytorch.loggers"
    assert check_class_path("MSRVTT", "x") == ("", "MSRVTT")  # a short name: looked up in the suite's packages
    for bad in ("os.system", "subprocess.Popen", "lightning.pytorch.cli.LightningCLI", "lightning_modules_evil.X",
                "builtins.eval", "lightning_modules.x;rm", "", 3, None):
        with pytest.raises(UntrustedFileError, match=r"ckpt\.yaml"):
            check_class_path(bad, "ckpt.yaml")


def test_resolved_classes_must_be_the_suites_and_subclass_the_expected_base() -> None:
    from datamodules import MSRVTT
    from lightning_modules import CLIP4Clip

    assert resolve_class("lightning_modules.CLIP4Clip", L.LightningModule, "x") is CLIP4Clip
    assert resolve_class("MSRVTT", L.LightningDataModule, "x") is MSRVTT
    with pytest.raises(UntrustedFileError, match="LightningDataModule"):
        resolve_class("lightning_modules.CLIP4Clip", L.LightningDataModule, "x")  # the wrong base
    with pytest.raises(UntrustedFileError, match="defined in the suite's packages"):
        resolve_class("datamodules.folder.Path", object, "x")  # an allowed module, a foreign class it imports
    with pytest.raises(UntrustedFileError, match="does not import"):
        resolve_class("lightning_modules.no_such_module.X", object, "x")


def test_nested_class_paths_and_the_instantiator_are_checked() -> None:
    good = {"_class_path": "lightning_modules.CLIP4Clip", "_instantiator": "lightning.pytorch.cli.instantiate_module",
            "backbone": {"class_path": "lightning_modules.OpenCLIPBackbone", "init_args": {}},
            "loggers": [{"class_path": "lightning.pytorch.loggers.CSVLogger"}]}
    check_class_paths(good, "ckpt")
    for key, value in (("loggers", [{"class_path": "os.system"}]), ("_instantiator", "os.system"),
                       ("backbone", {"class_path": "torch.nn.Linear"})):
        with pytest.raises(UntrustedFileError, match="ckpt"):
            check_class_paths({**good, key: value}, "ckpt")


def test_a_package_of_ones_own_is_allowed_by_the_environment_variable(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "vtr_own_methods.py").write_text(
        "import lightning as L\n\n\nclass MyMethod(L.LightningModule):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "vtr_own_methods", raising=False)
    with pytest.raises(UntrustedFileError, match=EXTRA_PACKAGES_ENV):
        resolve_class("vtr_own_methods.MyMethod", L.LightningModule, "x")
    assert "vtr_own_methods" not in sys.modules  # refused before import
    monkeypatch.setenv(EXTRA_PACKAGES_ENV, "other, vtr_own_methods")
    assert resolve_class("vtr_own_methods.MyMethod", L.LightningModule, "x").__name__ == "MyMethod"
    monkeypatch.setenv(EXTRA_PACKAGES_ENV, "bad name")
    with pytest.raises(ValueError, match=EXTRA_PACKAGES_ENV):
        check_class_path("lightning_modules.CLIP4Clip", "x")


def test_another_file_than_the_expected_one_is_refused_before_loading(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "lightning_modules.CLIP4Clip"}}, ckpt)
    with pytest.raises(ChecksumMismatchError, match=str(ckpt)) as error:
        load_lightning_module(ckpt, L.LightningModule, expected_sha256="0" * 64)
    assert len(error.value.actual) == 64
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "os.system"}}, ckpt)
    with pytest.raises(UntrustedFileError, match=r"\[hyper_parameters\] _class_path"):
        load_lightning_module(ckpt, L.LightningModule)
