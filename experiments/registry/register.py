"""Put finished runs into the results registry (``results/<study>/<name>/``) in its compact format.

    python -m experiments.registry.register RUN[=NAME] ... --study results/narvid_hallucination [--force]
        [--allow-dirty] [--no-matrix] [--wandb [--wandb-project vtr-registry]]

``RUN`` is a run folder (the one holding ``test/metrics.json``) or a folder with exactly one such run below it
(a sweep run's ``version_0``). ``NAME`` is the registry folder name; ``RUN=NAME`` is split at its last ``=`` only
when ``RUN=NAME`` is itself no folder (a sweep's run folder names hold ``=``). Without a name the run folder's
name is used, with the characters a sweep puts in it (``{`` ``"`` ``:`` ``,`` ``=`` spaces) turned into ``_``.

What a registered run keeps (``experiments/results/registry_format.py`` describes each file): ``metrics.json``, one
``config.yaml``, ``metrics.csv.gz``, ``queries.npz`` (per query: the ground-truth rank, the top-10 videos and their
scores; per video: the v2t rank) instead of ``sim_t2v.npy``, ``queries_<name>.npz`` for each raw view
(``sim_t2v_<view>.npy``) and post-processing flag (``sim_t2v_<flag>.npy`` with ``metrics_<flag>.json``), and
``expert_usage.json`` when the run has one; the test split's ids go once into the study's
``test_set_<sha>.json``. Before a matrix is dropped, every metric of ``metrics.json`` (a view's ``<view>/...`` keys,
a flag's ``metrics_<flag>.json``) is recomputed from it and a disagreement refuses the run; the matrix's sha256,
shape and dtype go into ``metrics.json``'s ``registry`` object. Absolute paths are rewritten (``registry.PathRewriter``)
and a path the rewriting cannot place refuses the run. Never checkpoints or full matrices: ``--wandb`` uploads
the run's matrices and id files as a W&B artifact (type ``similarity-matrices``, offline unless ``WANDB_MODE`` says
otherwise) and records its name. ``--no-matrix`` keeps no per-query file (for runs whose tables need only
``metrics.json``; the report reads them with ``--no-matrices``).

Refused: a run whose test did not finish (no complete ``metrics.json``), a run made with uncommitted changes
(``git_dirty: true`` in ``metrics.json``) unless ``--allow-dirty`` (the README's provenance line then names the
diff's hash), and an existing registry folder unless ``--force``. A folder is written whole or not at all.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import yaml

from datamodules.checksums import file_sha256
from experiments.results import registry_format as registry
from experiments.results.runs import (
    POSTPROCESSED_NAME,
    REQUIRED_METRICS,
    ReportError,
    load_registered_test_set,
    load_run,
)

SAFE_NAME = re.compile(r"[^A-Za-z0-9._@+-]+")
ID_FILES = ("text_ids.json", "video_ids.json", "text_to_video.json")
TOLERANCE = 1e-6   # metrics.json holds these same float64 computations on the same integer ranks
VIEW_KEYS = ("t2v_R1", "t2v_R5", "t2v_R10", "v2t_R1", "rsum")   # what base.py logs of each raw view
WANDB_PROJECT = "vtr-registry"


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


@dataclass
class Plan:
    """One run to register: its run folder, where it goes, and where it was made (the anchor of its paths)."""

    run: Path                       # holds test/metrics.json (and config.yaml, metrics.csv)
    dest: Path                      # results/<study>/<name>
    origin: PurePosixPath           # the run folder on the machine that made it
    study_origins: dict[PurePosixPath, str] = field(default_factory=dict)  # every run of this batch: origin -> name

    @property
    def name(self) -> str:
        return self.dest.name


# ---------------------------------------------------------------- reading the run folder
def _json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: cannot read {what} ({err}); re-run `python main.py test` for this run") from err


def read_record(run: Path, allow_dirty: bool) -> dict[str, Any]:
    """``test/metrics.json`` of a finished, complete test; a run with uncommitted changes only with ``allow_dirty``."""
    path = run / "test" / "metrics.json"
    record = _json(path, "the test metrics")
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise ReportError(f"{path}: has no 'metrics' object; re-run `python main.py test` for this run")
    missing = [k for k in REQUIRED_METRICS if k not in record["metrics"]]
    if missing or not record.get("complete", False):
        why = f"missing {', '.join(missing)}" if missing else "complete: false"
        raise ReportError(f"{path}: an incomplete test ({why}); only full test evaluations go into the registry")
    dirty = record.get("git_dirty")
    if dirty is not None and not isinstance(dirty, bool):
        raise ReportError(f"{path}: git_dirty must be true or false, got {dirty!r}")
    if dirty and not allow_dirty:
        diff = str(record.get("git_diff_sha256") or "not recorded")[:8]
        raise ReportError(f"{path}: the run was made with uncommitted changes (git_dirty: true, diff {diff}), so "
                          f"its commit {str(record.get('git_sha'))[:7]} does not say what code produced it. Commit "
                          "the changes and re-run the test, or pass --allow-dirty to register it anyway (its "
                          "provenance line then says 'uncommitted changes (diff <hash>)').")
    return record


def read_ids(test: Path) -> registry.SplitIds | None:
    """The run's test ids, None when the run folder has none of the id files."""
    present = [(test / n).is_file() for n in ID_FILES]
    if not any(present):
        return None
    if not all(present):
        lost = [n for n, ok in zip(ID_FILES, present, strict=True) if not ok]
        raise ReportError(f"{test / lost[0]}: missing ({', '.join(lost)}); re-run `python main.py test` for this run")
    text_ids, video_ids, gt = (_json(test / n, "the test ids") for n in ID_FILES)
    return registry.ids_from_lists(text_ids, video_ids, gt, str(test))


def _matrix(path: Path, ids: registry.SplitIds) -> np.ndarray:
    try:
        sim = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: not a readable .npy matrix ({err}); re-run `python main.py test`") from err
    shape = (len(ids.text_ids), len(ids.video_ids))
    if sim.shape != shape or not np.issubdtype(sim.dtype, np.floating):
        raise ReportError(f"{path}: a {sim.dtype} matrix of shape {sim.shape}, but the id files describe {shape[0]} "
                          f"texts x {shape[1]} videos of floats; the files come from different test runs. Re-run "
                          "`python main.py test`.")
    if not np.isfinite(sim).all():
        raise ReportError(f"{path}: holds NaN or infinite scores; ranks are undefined. Re-test a checkpoint that "
                          "did not diverge.")
    return sim


def _check(expected: dict[str, Any], computed: dict[str, float], keys: list[str], matrix: Path, record: str) -> None:
    """Refuse the run when a metric of ``record`` disagrees with the one recomputed from ``matrix``."""
    bad = []
    for key in keys:
        value = expected.get(key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or abs(float(value) - computed[key]) > TOLERANCE:
            bad.append(f"{key}: {record} {value!r}, recomputed {computed[key]:.6g}")
    if bad:
        raise ReportError(f"{matrix}: the metrics recomputed from it disagree with {record} ({'; '.join(bad[:4])}"
                          + (f"; {len(bad) - 4} more" if len(bad) > 4 else "") + "), so the matrix is not the one "
                          "the numbers came from and cannot replace it. Re-run `python main.py test` for this run.")


@dataclass
class Compacted:
    """A run's matrices as the registry keeps them."""

    queries: dict[str, registry.QueryResults] = field(default_factory=dict)   # queries file -> results
    matrices: list[dict[str, Any]] = field(default_factory=list)              # registry.matrices entries
    expected: dict[str, dict[str, float]] = field(default_factory=dict)      # queries file -> its metrics


def compact(test: Path, record: dict[str, Any], ids: registry.SplitIds) -> Compacted:
    """Every matrix of ``test/`` checked against the metrics it produced, then reduced to per-query results."""
    from lightning_modules.metrics import retrieval_metrics

    gt = np.asarray(ids.text_to_video, dtype=np.int64)
    out = Compacted()
    plain_path = test / "sim_t2v.npy"
    if not plain_path.is_file():
        raise ReportError(f"{plain_path}: missing; register needs the matrix to check the metrics and keep the "
                          "per-query results (or pass --no-matrix for a table of metrics only)")
    plain = _matrix(plain_path, ids)
    computed = retrieval_metrics(plain, gt)
    _check(record["metrics"], computed, list(computed), plain_path, "metrics.json")
    out.queries[registry.QUERIES] = registry.query_results(plain, gt)
    out.expected[registry.QUERIES] = computed
    used = {plain_path.name}
    for path in sorted(test.glob("sim_t2v_*.npy")):
        name = path.name[len("sim_t2v_"):-len(".npy")]
        sim = _matrix(path, ids)
        flag_record = test / f"metrics_{name}.json"
        file = registry.queries_file(name)
        if flag_record.is_file():  # a post-processing flag: its own record, t2v on this matrix
            flag = _json(flag_record, "the post-processed metrics")
            flag = flag if isinstance(flag, dict) else {}
            v2t_path = test / f"sim_v2t_{name}.npy"
            v2t_sim = _matrix(v2t_path, ids) if v2t_path.is_file() else None
            again = retrieval_metrics(sim, gt)
            if v2t_sim is not None:
                again.update({k: v for k, v in retrieval_metrics(v2t_sim, gt).items() if k.startswith("v2t_")})
                used.add(v2t_path.name)
            else:  # QB-Norm leaves v2t plain: its record copies the plain numbers
                again.update({k: v for k, v in computed.items() if k.startswith("v2t_")})
            again["rsum"] = sum(again[f"{d}_R{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10))
            _check(flag.get("metrics") or {}, again, [k for k in again if k not in ("num_texts", "num_videos")], path,
                   flag_record.name)
            out.queries[file] = registry.query_results(sim, gt, v2t_sim, v2t=v2t_sim is not None)
            out.expected[file] = again
        else:  # a raw similarity view: metrics.json has its <view>/... keys
            keys = [k for k in VIEW_KEYS if f"{name}/{k}" in record["metrics"]]
            if not keys:
                raise ReportError(f"{path}: neither a similarity view of metrics.json (no {name}/t2v_R1 ...) nor a "
                                  f"post-processing (no metrics_{name}.json next to it); remove the file or re-run "
                                  "`python main.py test`")
            again = retrieval_metrics(sim, gt)
            _check(record["metrics"], {f"{name}/{k}": again[k] for k in keys}, [f"{name}/{k}" for k in keys], path,
                   "metrics.json")
            out.queries[file] = registry.query_results(sim, gt)
            out.expected[file] = {k: again[k] for k in keys}
        used.add(path.name)
    for path in sorted(test.glob("*.npy")):
        entry: dict[str, Any] = {"file": path.name, "sha256": file_sha256(path)}
        try:
            header = np.load(path, mmap_mode="r", allow_pickle=False)
            entry.update({"shape": list(header.shape), "dtype": str(header.dtype)})
        except (OSError, ValueError) as err:
            raise ReportError(f"{path}: not a readable .npy file ({err})") from err
        # the compact file each checked matrix went into; None for the others (QB-Norm's bank scores: W&B only)
        match = re.fullmatch(r"sim_(?:t2v|v2t)(?:_(.+))?\.npy", path.name)
        entry["queries"] = registry.queries_file(match.group(1) or "") if match and path.name in used else None
        out.matrices.append(entry)
    return out


# ---------------------------------------------------------------- writing the registry folder
def _dump_yaml(config: dict[str, Any], original: str) -> str:
    """``config`` as YAML, with the comment lines that opened the original (LightningCLI's version line)."""
    head = "".join(line for line in original.splitlines(keepends=True)[:5] if line.startswith("#"))
    return head + yaml.safe_dump(config, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)


def _no_absolute(value: Any, where: Path) -> None:
    found = next(registry.absolute_paths(value), None)
    if found is not None:
        raise ReportError(f"{where}: {found[0] or 'a value'} holds an absolute path inside a longer text "
                          f"({found[1][:120]!r}) that the registry cannot rewrite; edit it in the run folder (or "
                          "register without that setting) so no machine path enters results/")


def data_root(config: dict[str, Any]) -> PurePosixPath | None:
    """The run's data root when its config gives an absolute one (a relative root stays as it is)."""
    data = config.get("data")
    args = data.get("init_args") if isinstance(data, dict) else None
    root = args.get("root") if isinstance(args, dict) else None
    return PurePosixPath(root) if isinstance(root, str) and root.startswith("/") else None


def register(plan: Plan, force: bool = False, matrix: bool = True, allow_dirty: bool = False,
             registered_by: str = "experiments.registry.register", extra: dict[str, Any] | None = None) -> Path:
    """Write ``plan.dest`` from ``plan.run`` (see the module docstring); returns ``plan.dest``.

    ``plan.dest`` may be ``plan.run`` itself (the migration rewrites a folder in place): everything is read and
    written to a temporary folder next to it before the old folder is replaced.
    """
    run, dest = plan.run, plan.dest
    test = run / "test"
    record = read_record(run, allow_dirty)
    if dest.exists() and not force:
        raise ReportError(f"{dest}: already in the registry; pass --force to replace it")
    ids = read_ids(test)
    if matrix and ids is None:
        raise ReportError(f"{test / 'text_ids.json'}: missing; the per-query results need the test ids (re-run "
                          "`python main.py test`, or pass --no-matrix)")
    packed = compact(test, record, ids) if matrix and ids is not None else Compacted()
    config_path = next((p for p in (test / "config.yaml", run / "config.yaml") if p.is_file()), None)
    config_text = config_path.read_text() if config_path is not None else None
    try:
        config = yaml.safe_load(config_text) if config_text is not None else None
    except yaml.YAMLError as err:
        raise ReportError(f"{config_path}: not valid YAML ({err}); restore the run's resolved config") from err
    if config_text is not None and not isinstance(config, dict):
        raise ReportError(f"{config_path}: expected a mapping (LightningCLI's resolved config)")
    rewriter = registry.PathRewriter(plan.origin, data_root(config or {}), plan.study_origins, plan.name)

    study = dest.parent
    study.mkdir(parents=True, exist_ok=True)
    tmp = study / f".{dest.name}.registering-{os.getpid()}"
    backup = study / f".{dest.name}.replaced-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    new_split = ids is not None and not (study / ids.filename).exists()
    done = False
    try:
        if ids is not None:
            registry.write_split(study, ids)
        for file, results in packed.queries.items():
            registry.write_queries(tmp / file, results, len(ids.video_ids) if ids else 0)
        if config is not None:
            new_config = rewriter.value(config)
            _no_absolute(new_config, config_path)
            (tmp / "config.yaml").write_text(_dump_yaml(new_config, config_text or ""))
        if (run / "metrics.csv").is_file():
            (tmp / registry.METRICS_CSV).write_bytes(registry.gzip_bytes((run / "metrics.csv").read_bytes()))
        extras = [p for p in sorted(test.glob("*.json")) if POSTPROCESSED_NAME.fullmatch(p.name)
                  or p.name == "expert_usage.json"]
        for path in extras:
            value = rewriter.value(_json(path, "a test record"))
            _no_absolute(value, path)
            (tmp / path.name).write_text(json.dumps(value, indent=2, default=str) + "\n")
        new_record = rewriter.value(record)
        _no_absolute(new_record, test / "metrics.json")
        new_record[registry.REGISTRY_KEY] = {
            "format": registry.FORMAT, "registered_by": registered_by,
            "test_set": ids.filename if ids else None, "test_set_sha256": ids.sha256 if ids else None,
            "top_k": registry.TOP_K, "score_bits": registry.SCORE_BITS, "matrices": packed.matrices, **(extra or {})}
        (tmp / "metrics.json").write_text(json.dumps(new_record, indent=2, default=str) + "\n")
        _round_trip(tmp, packed)
        if dest.exists():
            os.replace(dest, backup)
        os.replace(tmp, dest)
        done = True
    finally:
        if not done and backup.exists() and not dest.exists():  # the new folder could not take the old one's place
            os.replace(backup, dest)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(backup, ignore_errors=True)
        if not done and new_split and ids is not None:  # no run refers to the test set this call wrote
            (study / ids.filename).unlink(missing_ok=True)
    return dest


def _round_trip(folder: Path, packed: Compacted) -> None:
    """Read the written folder back as the report does and recompute the metrics from its per-query files."""
    loaded = load_run(folder / "metrics.json")
    for file, expected in packed.expected.items():
        name = "" if file == registry.QUERIES else file[len("queries_"):-len(".npz")]
        test = loaded.test if not name else load_registered_test_set(loaded, name)
        v2t = test.v2t_ranks if test.v2t_ranks is not None else loaded.test.v2t_ranks
        again = registry.metrics_from_ranks(test.ranks, v2t)
        wrong = [k for k in expected if k in again and abs(again[k] - expected[k]) > TOLERANCE]
        if wrong:  # a writer bug, never bad input: stop before the folder replaces anything
            raise RuntimeError(f"{folder / file}: {wrong} read back differently from what was written")


# ---------------------------------------------------------------- W&B
def artifact_name(study: Path, name: str) -> str:
    """W&B artifact names allow letters, digits, ``-``, ``_`` and ``.``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"matrices-{study.resolve().name}-{name}").strip("-")


def upload(plans: list[Plan], project: str) -> dict[Path, dict[str, Any]]:
    """One W&B run (job type ``register``) with one artifact per run: its ``test/`` matrices, id files and
    ``metrics.json``; returns ``dest -> {"project", "artifact", "run_dir"}`` for the registry record."""
    import wandb

    mode = os.environ.get("WANDB_MODE") or "offline"
    study = plans[0].dest.parent
    wb = wandb.init(project=project, job_type="register", name=f"register-{study.resolve().name}", mode=mode,
                    config={"study": str(study), "runs": {p.name: str(p.run) for p in plans}})
    done: dict[Path, dict[str, Any]] = {}
    try:
        for plan in plans:
            test = plan.run / "test"
            files = [*sorted(test.glob("*.npy")), *(test / n for n in (*ID_FILES, "metrics.json")),
                     *sorted(test.glob("metrics_*.json")), *sorted(test.glob("bank_text_ids_*.json"))]
            name = artifact_name(study, plan.name)
            artifact = wandb.Artifact(name, type="similarity-matrices",
                                      description=f"full test matrices of {study.name}/{plan.name} (results registry)",
                                      metadata={"study": study.name, "run": plan.name,
                                                "sha256": {p.name: file_sha256(p) for p in files
                                                           if p.suffix == ".npy"}})
            for path in files:
                if path.is_file():
                    artifact.add_file(str(path), name=path.name)
            wb.log_artifact(artifact)
            done[plan.dest] = {"project": project, "artifact": name}
    finally:
        wb.finish()
        # wandb-core writes the run's log in a service process that may outlive finish(); tearing it down flushes it
        wandb.teardown()
    return done


# ---------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.registry.register", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN[=NAME]", help="run folders, each optionally =registry name")
    p.add_argument("--study", required=True, type=Path, help="registry folder of the study, e.g. results/my_study")
    p.add_argument("--force", action="store_true", help="replace registry folders that exist")
    p.add_argument("--allow-dirty", action="store_true",
                   help="register runs made with uncommitted changes (git_dirty: true); the README says so")
    p.add_argument("--no-matrix", action="store_true",
                   help="keep no per-query file: for tables of metrics only; the report reads such runs with "
                        "--no-matrices")
    p.add_argument("--wandb", action="store_true",
                   help="upload each run's full matrices and id files as a W&B artifact (offline unless WANDB_MODE "
                        "says otherwise) and record its name in metrics.json")
    p.add_argument("--wandb-project", default=WANDB_PROJECT, help=f"W&B project of --wandb (default {WANDB_PROJECT})")
    return p.parse_args(argv)


def plan(items: list[str], study: Path) -> list[Plan]:
    plans: list[Plan] = []
    for item in items:
        # a sweep's run folder names hold '=' themselves: split off a name only when the whole item is no folder
        src, name = (item, "") if Path(item).exists() or "=" not in item else item.rsplit("=", 1)
        run = find_run(Path(src))
        dest = study / (name or default_name(run if run.name != "version_0" else run.parent))
        if any(dest == p.dest for p in plans):
            raise ReportError(f"{dest}: two runs would be registered under the same name; name them (RUN=NAME)")
        plans.append(Plan(run, dest, PurePosixPath(run.resolve().as_posix())))
    origins = {p.origin: p.name for p in plans}
    for p in plans:
        p.study_origins = origins
    return plans


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    plans = plan(args.runs, args.study)
    for p in plans:  # every refusal before anything is uploaded or written
        read_record(p.run, args.allow_dirty)
        if p.dest.exists() and not args.force:
            raise ReportError(f"{p.dest}: already in the registry; pass --force to replace it")
    uploaded = upload(plans, args.wandb_project) if args.wandb else {}
    done = []
    for p in plans:
        extra = {"wandb": uploaded[p.dest]} if p.dest in uploaded else None
        done.append(register(p, args.force, matrix=not args.no_matrix, allow_dirty=args.allow_dirty, extra=extra))
        print(f"{p.run} -> {p.dest} ({_size(p.run / 'test') / 1e6:.2f} MB of test artifacts -> "
              f"{_size(p.dest) / 1e6:.3f} MB)")
    return done


def cli() -> None:
    try:
        main()
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    cli()
