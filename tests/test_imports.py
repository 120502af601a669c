"""No module of the suite takes part in an import cycle, and each imports on its own in a fresh interpreter.

Two checks, because they catch different things:

* static (``test_import_graph_has_no_cycle``): the graph of every import between the suite's own modules, read with
  ``ast`` from the source. Module-level imports count, and so do imports inside functions and under
  ``if TYPE_CHECKING:``: an import moved into a function, or behind TYPE_CHECKING, to break a loop leaves the two
  modules depending on each other (the loop comes back the day someone lifts the import to the top, and neither
  module can be read, tested or moved without the other). An edge points at the module an import names
  (``from pkg.mod import x`` -> ``pkg.mod``; ``from pkg import name`` -> ``pkg.name`` when that is a module, else
  ``pkg``); the parent packages Python initialises on the way are not edges (every package's ``__init__``
  re-exports its children, which would read as a loop with each of them), and the dynamic check below covers
  what they do at run time.
* dynamic (``test_every_module_imports_alone``): every module imported alone in a fresh interpreter, so a module
  that only imports because some other module happened to be imported first fails. A fresh interpreter per module
  costs a torch import (seconds) each; instead one fresh parent imports the heavy third-party packages only, then
  forks one child per suite module, which imports just that module. Every failure is reported at once.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("lightning_modules", "datamodules", "callbacks", "experiments", "benchmarks", "vtr")
TOP_LEVEL_MODULES = ("main",)
# imported by the parent before it forks, so each child only pays for the suite's own code
HEAVY_THIRD_PARTY = ("numpy", "torch", "torchvision", "lightning", "lightning.pytorch", "lightning.pytorch.cli",
                     "torchmetrics", "jsonargparse", "transformers", "open_clip", "timm", "yaml", "PIL", "av",
                     "matplotlib", "faiss", "tqdm", "safetensors", "huggingface_hub", "peft", "accelerate", "psutil")


def suite_modules(root: Path = REPO) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the suite's packages and its top-level scripts."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    for name in TOP_LEVEL_MODULES:
        found[name] = root / f"{name}.py"
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the suite modules it imports anywhere in its source (top level, functions, TYPE_CHECKING)."""

    def named(dotted: str) -> str | None:  # the longest suite module that ``dotted`` names or lies inside
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                edges.update(t for a in node.names if (t := named(a.name)) is not None)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import: resolved against the importing module's package
                    anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else named(base)
                    if target is not None:
                        edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (iterative depth-first search, deterministic order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if start in state:
            continue
        path: list[str] = [start]
        todo: list[list[str]] = [sorted(graph[start], reverse=True)]
        state[start] = 1
        while todo:
            if not todo[-1]:
                state[path.pop()] = 2
                todo.pop()
                continue
            nxt = todo[-1].pop()
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                todo.append(sorted(graph.get(nxt, ()), reverse=True))
    return None


def test_find_cycle_finds_a_loop_and_only_a_loop() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond is no cycle


def test_import_graph_counts_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from pkg.a import A\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\nA = 1\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n    return a\n")
    (pkg / "c.py").write_text("import pkg.b\nfrom pkg import A\n")
    modules = {"pkg": pkg / "__init__.py", "pkg.a": pkg / "a.py", "pkg.b": pkg / "b.py", "pkg.c": pkg / "c.py"}
    graph = import_graph(modules)
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.b", "pkg"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_import_graph_has_no_cycle() -> None:
    modules = suite_modules()
    assert len(modules) > 100, sorted(modules)  # the walk found the suite (not an empty tree)
    graph = import_graph(modules)
    cycles = []
    while (cycle := find_cycle(graph)) is not None and len(cycles) < 20:  # every loop, not just the first
        cycles.append(" -> ".join(cycle))
        graph[cycle[0]].discard(cycle[1])
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def _import_each_in_forked_children(names: list[str], preload: tuple[str, ...]) -> dict[str, str]:
    """Runs in the fresh parent interpreter: the ``preload`` packages first, then one forked child per module.

    Returns module -> the child's error (exception and the frame that raised it), for the failures only.
    """
    import importlib
    import traceback

    for heavy in preload:
        importlib.import_module(heavy)
    preloaded = sorted(m for m in sys.modules if m.split(".")[0] in {*PACKAGES, *TOP_LEVEL_MODULES}
                       or m in names)
    if preloaded:  # a third-party package imported part of the suite: the children would not start fresh
        return {"<parent>": f"the third-party preload imported suite modules {preloaded}"}
    failures: dict[str, str] = {}
    running: dict[int, tuple[str, int]] = {}

    def reap(block: bool) -> None:
        pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        name, fd = running.pop(pid)
        with os.fdopen(fd, "rb") as pipe:
            message = pipe.read().decode("utf-8", "replace")
        if os.waitstatus_to_exitcode(status) != 0:
            failures[name] = message or f"exit status {os.waitstatus_to_exitcode(status)}"

    for name in names:
        while len(running) >= max(1, min(4, os.cpu_count() or 1)):
            reap(block=True)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: import one module, report through the pipe, never return into the parent's code
            os.close(read_fd)
            code = 0
            try:
                importlib.import_module(name)
            except BaseException as exc:  # any failure of the import is the finding
                frames = traceback.extract_tb(exc.__traceback__)
                where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
                os.write(write_fd, f"{type(exc).__name__}: {exc}{where}".encode())
                code = 1
            os.close(write_fd)
            os._exit(code)
        os.close(write_fd)
        running[pid] = (name, read_fd)
    while running:
        reap(block=True)
    return failures


def import_each_alone(root: Path, names: list[str], preload: bool = True) -> dict[str, str]:
    """Import each of ``names`` (modules under ``root``) alone, in forked children of one fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, __file__, str(root), "preload" if preload else "bare", *names], cwd=root,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_each_alone_reports_a_circular_import(tmp_path: Path) -> None:
    pkg = tmp_path / "loop"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from loop.b import B\nA = 1\n")
    (pkg / "b.py").write_text("from loop.a import A\nB = 2\n")
    (pkg / "c.py").write_text("import json\nC = 3\n")
    (pkg / "d.py").write_text("import no_such_package_here\n")
    failures = import_each_alone(tmp_path, ["loop.a", "loop.b", "loop.c", "loop.d"], preload=False)
    assert sorted(failures) == ["loop.a", "loop.b", "loop.d"]
    assert "partially initialized module" in failures["loop.a"] and "b.py" in failures["loop.a"]
    assert failures["loop.d"].startswith("ModuleNotFoundError")


def test_every_module_imports_alone() -> None:
    # __main__ modules run their program when imported; they are two lines calling their package's cli, and the
    # static graph above still covers them
    names = sorted(m for m in suite_modules() if not m.endswith("__main__"))
    failures = import_each_alone(REPO, names)
    assert failures == {}, "modules that fail to import alone:\n" + "\n".join(f"  {m}: {e}"
                                                                             for m, e in failures.items())


if __name__ == "__main__":  # the fresh parent interpreter of import_each_alone: root, preload|bare, modules...
    sys.path.remove(str(Path(__file__).resolve().parent))  # tests/ itself is no import root (tests/benchmarks!)
    sys.path.insert(0, sys.argv[1])
    print(json.dumps(_import_each_in_forked_children(sys.argv[3:], HEAVY_THIRD_PARTY if sys.argv[2] == "preload"
                                                     else ())))
