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


RESULT_PROGRAMS = ("report", "registry", "tables")  # experiments/<program>/: the three programs over results/


def experiments_imports(package: str) -> list[tuple[str, str]]:
    """(file:line, imported module) for every ``experiments.*`` import under ``experiments/<package>/``; ``from
    experiments.x import y`` counts ``experiments.x.y`` as well, since y may be a module."""
    found = []
    for path in sorted((ROOT / "experiments" / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("experiments"):
                found += [(where, node.module)] + [(where, f"{node.module}.{a.name}") for a in node.names]
            elif isinstance(node, ast.Import):
                found += [(where, a.name) for a in node.names if a.name.startswith("experiments")]
    return found


def test_the_results_programs_share_code_only_through_experiments_results() -> None:
    """The comparison report, the README/docs tables and the registry import each other's modules nowhere (a CLI
    least of all); what they share lives in experiments/results/, which imports none of them."""
    for program in RESULT_PROGRAMS:
        others = [f"experiments.{p}" for p in RESULT_PROGRAMS if p != program]
        crossing = [(w, m) for w, m in experiments_imports(program) if any(m == o or m.startswith(o + ".")
                                                                           for o in others)]
        assert crossing == [], program
    upward = [(w, m) for w, m in experiments_imports("results")
              if any(m == f"experiments.{p}" or m.startswith(f"experiments.{p}.") for p in RESULT_PROGRAMS)]
    assert upward == []
