"""``python -m experiments.tables [FILE ...] [--check] [--root DIR]``: regenerate (or check) every generated block.

Without a file argument it covers the whole documentation of the repository: ``README.md``, every ``docs/**/*.md``
and every ``results/**/README.md``. A block's paths (``results-table: results/demo``) are relative to the
repository root, the folder of ``pyproject.toml``, whichever file holds the block, so a block moved from README.md
into ``docs/methods/narvid.md`` works unchanged. Explicit files are rendered the same way (root: the nearest folder
above the first file that holds ``pyproject.toml``, or ``--root``).

The block kinds: ``results-table`` (``results_table.py``), ``reproduction-table`` (``reproduction.py``),
``json-table`` (``json_table.py``), ``comparison-table`` (``comparison_block.py``) and ``leaderboard-table``
(``leaderboard_block.py``). Messages name the file (as given, or relative to the root) and the line of the block.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from datamodules.atomic import write_text_atomic
from experiments.results.errors import ReportError
from experiments.tables import comparison_block, json_table, leaderboard_block, reproduction, results_table
from experiments.tables.blocks import COMMAND, Stale

ROOT_MARKER = "pyproject.toml"


@dataclass(frozen=True)
class Kind:
    """One block kind: ``render(text, name, base) -> (text, stale)`` and how many blocks a text holds."""

    render: Callable[[str, str, Path], tuple[str, list[Stale]]]
    count: Callable[[str], int]


KINDS = (
    Kind(results_table.render, results_table.count),
    Kind(reproduction.render, lambda text: len(reproduction.START.findall(text))),
    Kind(json_table.render, lambda text: len(json_table.START.findall(text))),
    Kind(comparison_block.render, lambda text: len(comparison_block.START.findall(text))),
    Kind(leaderboard_block.render, lambda text: len(leaderboard_block.START.findall(text))),
)


@dataclass
class Outcome:
    """One file regenerated: its new text, its stale blocks (where, old, new) and how many blocks it holds."""

    path: Path
    name: str
    text: str
    new_text: str
    stale: list[Stale]
    blocks: int


def find_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` that holds ``pyproject.toml`` (the repository root)."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / ROOT_MARKER).is_file():
            return folder
    raise ReportError(f"{start}: no {ROOT_MARKER} in it or above it, so there is no repository root to resolve the "
                      "blocks' paths against; run inside the repository or pass --root <its folder>")


def documentation_files(root: Path) -> list[Path]:
    """README.md, docs/**/*.md and results/**/README.md of the repository, in a stable order."""
    files = [root / "README.md"] if (root / "README.md").is_file() else []
    files += sorted((root / "docs").rglob("*.md")) if (root / "docs").is_dir() else []
    files += sorted((root / "results").rglob("README.md")) if (root / "results").is_dir() else []
    return files


def render_file(path: Path, name: str, root: Path) -> Outcome:
    """Every block of ``path`` regenerated with paths relative to ``root``; ``name`` is how messages call the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"{name}: cannot read ({err})") from err
    new_text, stale = text, []
    for kind in KINDS:
        new_text, found = kind.render(new_text, name, root)
        stale += found
    return Outcome(path, name, text, new_text, stale, sum(kind.count(text) for kind in KINDS))


def diff(where: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.lstrip("\n").splitlines(keepends=True),
                                        new.lstrip("\n").splitlines(keepends=True),
                                        fromfile=f"{where} (in the file)",
                                        tofile=f"{where} (generated from the results)"))


def _display(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"{COMMAND}",
                                     description="Regenerate (or --check) the generated tables of README.md, "
                                                 "docs/**/*.md and results/**/README.md.")
    parser.add_argument("files", nargs="*", type=Path,
                        help="markdown files (default: README.md, docs/**/*.md and results/**/README.md of the "
                             "repository)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 and print a unified diff when a block is stale")
    parser.add_argument("--root", type=Path, default=None,
                        help="the repository root the blocks' paths are relative to (default: the folder of "
                             "pyproject.toml above the first file, or above the current directory)")
    args = parser.parse_args(argv)
    try:
        root = args.root.resolve() if args.root else find_root(args.files[0].parent if args.files else Path.cwd())
        if args.files:
            files = [(path, str(path)) for path in args.files]
        else:
            files = [(path, _display(path, root)) for path in documentation_files(root)]
            if not files:
                raise ReportError(f"{root}: no README.md, docs/**/*.md or results/**/README.md to generate")
        outcomes = [render_file(path, name, root) for path, name in files]
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    blocks = sum(o.blocks for o in outcomes)
    stale = [(o, where, old, new) for o in outcomes for where, old, new in o.stale]
    stale_files = list(dict.fromkeys(o.name for o, *_ in stale))
    if args.check:
        for _, where, old, new in stale:
            print(f"stale: {where}")
            print(diff(where, old, new), end="")
        if stale:
            print(f"{len(stale)} of {blocks} generated block(s) stale in {', '.join(stale_files)}; run "
                  f"`{COMMAND}" + (" " + " ".join(str(f) for f in args.files) if args.files else "")
                  + "` to regenerate them")
            return 1
        print(f"{blocks} generated block(s) in {len(outcomes)} file(s) up to date")
        return 0
    for outcome in outcomes:
        if outcome.stale:
            write_text_atomic(outcome.path, outcome.new_text)
    for _, where, _, _ in stale:
        print(f"regenerated: {where}")
    print(f"{len(stale)} of {blocks} generated block(s) in {len(outcomes)} file(s) regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
