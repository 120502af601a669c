"""``lightning_modules`` and ``callbacks`` use only the public names of ``datamodules`` (checked statically)."""

from __future__ import annotations

import ast

from tests.run_helpers import REPO as ROOT


def private_datamodule_imports(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("datamodules"):
                names = [a.name for a in node.names if a.name.startswith("_")]
                parts = [p for p in node.module.split(".") if p.startswith("_")]
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                found += [f"{where}: from {node.module} import {n}" for n in names + parts]
            elif isinstance(node, ast.Import):
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: import {a.name}" for a in node.names
                          if a.name.startswith("datamodules") and any(p.startswith("_") for p in a.name.split("."))]
    return found


def test_models_and_callbacks_import_no_private_datamodule_name() -> None:
    for package in ("lightning_modules", "callbacks"):
        assert private_datamodule_imports(package) == [], package


def test_feature_cache_imports_no_private_name() -> None:
    tree = ast.parse((ROOT / "datamodules" / "feature_cache.py").read_text(encoding="utf-8"))
    private = [a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for a in node.names
               if a.name.startswith("_") and node.module != "__future__"]
    assert private == []
