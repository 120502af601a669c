"""Convert the results registry's old layout (full matrices) to its compact format, in place.

    python -m experiments.registry.migrate [results]

Every old registered run below the folder (a folder ``results/<study>/<name>/`` holding ``test/metrics.json``, as
``register`` wrote them before the compact format) goes through ``register`` again, in place: every metric is
recomputed from its ``test/sim_t2v.npy`` (a run registered with ``--no-matrix`` has none and keeps no per-query
file), the matrix's sha256 is recorded together with ``registry.history``, the commit whose tree still holds the
old folder (``git show <commit>:results/<study>/<name>/test/sim_t2v.npy`` fetches the matrix and the sha256 checks
it), and absolute paths are rewritten. The run folder a run had when it was made (the anchor of the rewritten
paths) is read from its checkpoint path (``<run>/checkpoints/<file>.ckpt``) when the checkpoint is its own, else
from its logger (``save_dir/name/version``, ``version_0`` when the logger left it open).

Then every ``.jsonl`` file of the studies larger than ``--gzip-over`` bytes (CaRe-DPO's preference stores, SFT
caption dumps) is replaced by its ``.jsonl.gz`` (gzip without a timestamp; ``datamodules.jsonl`` reads both).
Running it again finds nothing to do.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from datamodules.atomic import write_bytes_atomic
from experiments.registry.register import Plan, register
from experiments.results import registry_format as registry
from experiments.results.runs import ReportError

GZIP_OVER = 64 * 1024


def old_runs(root: Path) -> list[Path]:
    """Registered runs in the old layout: folders holding ``test/metrics.json`` below ``root``."""
    return sorted(p.parent.parent for p in root.rglob("test/metrics.json"))


def _logger_args(config: dict[str, Any]) -> dict[str, Any]:
    logger = (config.get("trainer") or {}).get("logger")
    if isinstance(logger, list):
        logger = logger[0] if logger else None
    args = logger.get("init_args") if isinstance(logger, dict) else None
    return args if isinstance(args, dict) else {}


def origin(run: Path) -> PurePosixPath:
    """Where the run folder was on the machine that made it (see the module docstring)."""
    record = json.loads((run / "test" / "metrics.json").read_text())
    config_path = next((p for p in (run / "test" / "config.yaml", run / "config.yaml") if p.is_file()), None)
    config = (yaml.safe_load(config_path.read_text()) or {}) if config_path else {}
    args = _logger_args(config)
    save_dir, name, version = args.get("save_dir"), args.get("name"), args.get("version")
    logged = PurePosixPath(str(save_dir)) / str(name) if save_dir and name else (
        PurePosixPath(str(save_dir)) if save_dir else None)
    ckpt = record.get("ckpt_path") or config.get("ckpt_path")
    if ckpt:
        path = PurePosixPath(str(ckpt))
        if path.parent.name == "checkpoints" and (logged is None or logged in path.parents):
            return path.parent.parent
    if logged is not None and logged.is_absolute():
        folder = version if isinstance(version, str) else f"version_{version if isinstance(version, int) else 0}"
        return logged / folder
    root = (config.get("trainer") or {}).get("default_root_dir")
    if isinstance(root, str) and root.startswith("/"):
        return PurePosixPath(root)
    raise ReportError(f"{run}: cannot tell where the run was made (no checkpoint path, absolute logger folder or "
                      "default_root_dir), so its absolute paths have no anchor; register it from its run folder")


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def history_commit(root: Path) -> str | None:
    """The commit whose tree holds ``root`` exactly as it is (None when it is not committed or was changed)."""
    if _git(root, "status", "--porcelain", "--untracked-files=all", "--", ".") != "":
        return None
    return _git(root, "rev-parse", "HEAD")


def gzip_large_jsonl(root: Path, over: int, runs: list[Path]) -> list[tuple[Path, int, int]]:
    """Replace every ``.jsonl`` larger than ``over`` bytes (outside registered runs) by its ``.jsonl.gz``."""
    done = []
    for path in sorted(root.rglob("*.jsonl")):
        if path.stat().st_size <= over or any(run in path.parents for run in runs):
            continue
        data = path.read_bytes()
        packed = registry.gzip_bytes(data)
        write_bytes_atomic(path.with_name(path.name + ".gz"), packed)
        path.unlink()
        done.append((path, len(data), len(packed)))
    return done


def migrate(root: Path, gzip_over: int = GZIP_OVER) -> list[Path]:
    runs = old_runs(root)
    commit = history_commit(root)
    by_study: dict[Path, list[Path]] = {}
    for run in runs:
        by_study.setdefault(run.parent, []).append(run)
    done = []
    for study, members in sorted(by_study.items()):
        origins = {origin(run): run.name for run in members}
        if len(origins) != len(members):
            raise ReportError(f"{study}: two runs seem to have been made in the same folder; migrate them by hand")
        for run in members:
            matrix = (run / "test" / "sim_t2v.npy").is_file()
            extra = {"history": commit} if commit and matrix else None
            where = next(o for o, n in origins.items() if n == run.name)
            # runs made before git_dirty existed (all of them here): nothing to refuse
            register(Plan(run, run, where, origins), force=True, matrix=matrix, allow_dirty=True,
                     registered_by="experiments.registry.migrate", extra=extra)
            done.append(run)
            print(f"{run}: {'per-query results kept' if matrix else 'metrics only (registered with --no-matrix)'}")
    for path, before, after in gzip_large_jsonl(root, gzip_over, runs):
        print(f"{path} -> {path.name}.gz ({before / 1e6:.2f} MB -> {after / 1e6:.3f} MB)")
    if not runs:
        print(f"{root}: no run in the old layout (test/metrics.json); nothing to migrate")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.registry.migrate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path("results"))
    parser.add_argument("--gzip-over", type=int, default=GZIP_OVER, metavar="BYTES",
                        help=f"gzip .jsonl files larger than this (default {GZIP_OVER})")
    args = parser.parse_args(argv)
    try:
        migrate(args.root, args.gzip_over)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
