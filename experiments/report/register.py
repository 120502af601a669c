"""Copy the small artifacts of finished runs into the results registry (``results/<study>/<name>/``).

    python -m experiments.report.register RUN[=NAME] ... --study results/narvid_hallucination [--force]

``RUN`` is a run folder (the one holding ``test/metrics.json``) or a folder with exactly one such run below it
(a sweep run's ``version_0``). ``NAME`` is the registry folder name; ``RUN=NAME`` is split at its last ``=`` only
when ``RUN=NAME`` is itself no folder (a sweep's run folder names hold ``=``). Without a name the run folder's
name is used, with the characters a sweep puts in it (``{`` ``"`` ``:`` ``,`` ``=`` spaces) turned into ``_``.
What is copied: the run's ``config.yaml`` and ``metrics.csv``, and from ``test/`` ``metrics.json``,
``metrics_<flag>.json``, ``expert_usage.json`` (mixture-of-experts runs), ``config.yaml``, ``sim_t2v.npy`` (the
plain matrix, float32: the report's paired bootstrap and its checks read it; ``--no-matrix`` leaves it out, for
ablation studies whose tables need only ``metrics.json`` — the report then reads them with ``--no-matrices``) and the
id files. Never checkpoints, raw view matrices or post-processed matrices. An existing registry folder is refused
unless ``--force``; a run whose test did not finish (no complete ``metrics.json``) is refused.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from experiments.report.runs import REQUIRED_METRICS, ReportError

RUN_FILES = ("config.yaml", "metrics.csv")
TEST_FILES = ("metrics.json", "config.yaml", "sim_t2v.npy", "text_ids.json", "video_ids.json", "text_to_video.json")
SAFE_NAME = re.compile(r"[^A-Za-z0-9._@+-]+")


def find_run(path: Path) -> Path:
    """The run folder at or below ``path`` (the one holding ``test/metrics.json``); exactly one must exist."""
    if (path / "test" / "metrics.json").is_file():
        return path
    found = sorted(p.parent.parent for p in path.glob("**/test/metrics.json"))
    if len(found) != 1:
        what = "no run" if not found else f"{len(found)} runs ({', '.join(map(str, found[:3]))} ...)"
        raise ReportError(f"{path}: {what} with test/metrics.json below it; name one run folder per argument "
                          "(a run that has not been tested yet needs `python main.py test` first)")
    return found[0]


def default_name(path: Path) -> str:
    """A registry folder name from a (sweep) run folder name.

    ``filter_mode=none,seed_everything=0`` -> ``filter_mode_none_seed_everything_0``.
    """
    return SAFE_NAME.sub("_", path.name).strip("_") or "run"


def register(run: Path, dest: Path, force: bool = False, matrix: bool = True) -> Path:
    """Copy one run's small artifacts to ``dest`` (``matrix``: with ``sim_t2v.npy``); returns ``dest``."""
    record_path = run / "test" / "metrics.json"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ReportError(f"{record_path}: cannot read ({err}); re-run `python main.py test` for this run") from err
    missing = [k for k in REQUIRED_METRICS if k not in record.get("metrics", {})]
    if missing or not record.get("complete", False):
        why = f"missing {', '.join(missing)}" if missing else "complete: false"
        raise ReportError(f"{record_path}: an incomplete test ({why}); only full test evaluations go into the "
                          "registry")
    for name in TEST_FILES:
        if not (run / "test" / name).is_file():
            raise ReportError(f"{run / 'test' / name}: missing; the report needs it (re-run `python main.py test`)")
    if dest.exists():
        if not force:
            raise ReportError(f"{dest}: already in the registry; pass --force to replace it")
        shutil.rmtree(dest)
    (dest / "test").mkdir(parents=True)
    for name in RUN_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, dest / name)
    for name in TEST_FILES:
        if matrix or name != "sim_t2v.npy":
            shutil.copy2(run / "test" / name, dest / "test" / name)
    for extra in [*sorted((run / "test").glob("metrics_*.json")), *sorted((run / "test").glob("expert_usage.json"))]:
        shutil.copy2(extra, dest / "test" / extra.name)
    return dest


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.report.register", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN[=NAME]", help="run folders, each optionally =registry name")
    p.add_argument("--study", required=True, type=Path, help="registry folder of the study, e.g. results/my_study")
    p.add_argument("--force", action="store_true", help="replace registry folders that exist")
    p.add_argument("--no-matrix", action="store_true",
                   help="leave sim_t2v.npy out (512 KB per SynthVTR run): for tables of metrics only; the report reads "
                        "such runs with --no-matrices")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    plan: list[tuple[Path, Path]] = []
    for item in args.runs:
        # a sweep's run folder names hold '=' themselves: split off a name only when the whole item is no folder
        src, name = (item, "") if Path(item).exists() or "=" not in item else item.rsplit("=", 1)
        run = find_run(Path(src))
        dest = args.study / (name or default_name(run if run.name != "version_0" else run.parent))
        if any(dest == d for _, d in plan):
            raise ReportError(f"{dest}: two runs would be registered under the same name; name them (RUN=NAME)")
        plan.append((run, dest))
    done = []
    for run, dest in plan:
        done.append(register(run, dest, args.force, matrix=not args.no_matrix))
        print(f"{run} -> {dest}")
    return done


def cli() -> None:
    try:
        main()
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    cli()
