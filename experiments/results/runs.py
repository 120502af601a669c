"""Finding runs, loading their test artifacts, and grouping runs that differ only in seed.

A run is a folder holding ``test/metrics.json`` (a run folder as ``main.py test`` leaves it, README "What a run
leaves behind") or a registered run: a folder of the results registry whose ``metrics.json`` has a ``registry``
object (``experiments/results/registry_format.py``). Only the artifacts are read: the metrics record, the config
(``test/config.yaml`` or ``config.yaml``), the per-query results (a run folder's ``test/sim_t2v.npy`` with its id
files; a registered run's ``queries.npz`` with its study's ``test_set_<sha>.json``), ``metrics.csv`` (or the
registry's ``metrics.csv.gz``) and, for a sweep folder, ``sweep_summary.json``; test-time post-processed numbers
(``metrics_<flag>.json`` with ``sim_t2v_<flag>.npy`` or ``queries_<flag>.npz``, README "Post-processing (DSL,
QB-Norm)") are read next to them and kept apart from the plain ones.
"""

from __future__ import annotations

import csv
import fnmatch
import glob
import gzip
import io
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from experiments.results import registry_format as registry
from experiments.results.errors import ReportError

# metrics.json keys the main table needs; a record without them is malformed
REQUIRED_METRICS = ("t2v_R1", "t2v_R5", "t2v_R10", "t2v_MdR", "t2v_MnR", "v2t_R1", "v2t_R5", "v2t_R10", "rsum")
# a post-processed record (test/metrics_<flag>.json) needs at least the t2v numbers
REQUIRED_POSTPROCESSED = ("t2v_R1", "t2v_R5", "t2v_R10", "t2v_MdR", "t2v_MnR")
POSTPROCESSED_NAME = re.compile(r"metrics_([A-Za-z0-9]+)\.json")

# flat config keys that never change a result (paths, logging, evaluation tiling, workers) or that identify the
# seed; left out when deciding which runs belong together and which parameters a sweep varied
BOOKKEEPING = (
    "seed_everything", "ckpt_path", "weights_only", "trainer.logger*", "trainer.default_root_dir",
    "trainer.callbacks.*.init_args.dirpath", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.log_every_n_steps", "data.init_args.root", "data.init_args.cache_dir", "data.init_args.num_workers",
    "data.init_args.generator_workers", "data.init_args.eval_batch_size", "data.init_args.predict_*",
    "model.init_args.eval_text_chunk", "model.init_args.eval_video_chunk", "model.init_args.write_artifacts",
    # test-time post-processing never changes the plain numbers (its own files are read separately)
    "model.init_args.postprocess", "model.init_args.dsl_*", "model.init_args.qbnorm_*",
)


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: cannot read {what} ({err}). Re-run `python main.py test` for this run "
                          "(it rewrites the test/ folder) or leave the run out of the report's inputs.") from err


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists -> ``{"a.b.0.c": leaf}``; empty containers are kept as leaves."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    if isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: tuple(value) if isinstance(value, list) else value}


def is_bookkeeping(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in BOOKKEEPING)


def short_key(key: str) -> str:
    """``model.init_args.sim_header`` -> ``sim_header``; ``data.init_args.aux_captions.narration`` ->
    ``aux_captions.narration``."""
    return key.split("init_args.", 1)[1] if "init_args." in key else key


def fmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ",".join(fmt_value(v) for v in value) + "]"
    return str(value)


@dataclass
class TestSet:
    """What a run was tested on and how each query fared: row and column ids, the ground-truth column of every row,
    and either the full score matrix (a run folder) or its per-query results (a registered run's ``queries*.npz``)."""

    text_ids: list[str]
    video_ids: list[str]
    gt: np.ndarray
    sim: np.ndarray | None = None
    queries: registry.QueryResults | None = None
    source: Path | None = None            # the file the scores come from (named in messages)
    v2t_sim: np.ndarray | None = None     # a post-processing's own v2t matrix (still texts x videos)
    has_v2t: bool = True                  # False: a post-processing that left v2t plain (no v2t ranks of its own)

    @cached_property
    def ranks(self) -> np.ndarray:
        """1-based rank of each text's ground-truth video; ties pessimistic (lightning_modules/metrics.py)."""
        if self.queries is not None:
            return self.queries.t2v_rank
        sim = self._matrix().astype(np.float32, copy=False)
        target = sim[np.arange(len(self.gt)), self.gt][:, None]
        return (sim >= target).sum(axis=1)

    @cached_property
    def v2t_ranks(self) -> np.ndarray | None:
        """1-based video-to-text rank of each video (its best caption against every video's best), None when the
        per-query file keeps no v2t ranks (a post-processing that left v2t plain)."""
        if self.queries is not None:
            return self.queries.v2t_rank
        if not self.has_v2t:
            return None
        sim = (self._matrix() if self.v2t_sim is None else self.v2t_sim).astype(np.float32, copy=False)
        counts = np.bincount(self.gt, minlength=len(self.video_ids))
        if (counts == 0).any():
            raise ReportError(f"{self.source}: video {self.video_ids[int(np.argmin(counts))]!r} has no caption in "
                              "text_to_video.json, so its video-to-text rank is undefined")
        order = np.argsort(self.gt, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        group = np.maximum.reduceat(sim[order], starts, axis=0)   # [caption group u, video v]: best caption of u
        own = group[np.arange(len(self.video_ids)), np.arange(len(self.video_ids))]
        return (group >= own[None, :]).sum(axis=0)

    def _matrix(self) -> np.ndarray:
        assert self.sim is not None, "a TestSet holds a matrix or per-query results"
        return self.sim

    @property
    def top_k(self) -> int:
        """How many of each query's best videos can be listed."""
        return self.queries.top_k if self.queries is not None else len(self.video_ids)

    def top(self, row: int, k: int = 5) -> list[int]:
        """The ``k`` best video columns of text ``row``, best first (ties: lower column first)."""
        if self.queries is not None:
            if k > self.queries.top_k and self.queries.top_k < len(self.video_ids):
                raise ReportError(f"{self.source}: keeps the top {self.queries.top_k} videos of each query, and "
                                  f"{k} were asked for; that needs the full similarity matrix (the run folder's "
                                  "test/sim_t2v.npy, or the W&B artifact `register --wandb` uploaded, whose sha256 "
                                  "the run's metrics.json records)")
            return [int(i) for i in self.queries.t2v_top[row, :k]]
        return [int(i) for i in np.argsort(-self._matrix()[row], kind="stable")[:k]]

    def top_scores(self, row: int, k: int = 5) -> list[float]:
        """The scores of :meth:`top`, at the registry's precision (``registry.SCORE_BITS`` significant bits), so a
        run folder and its registered copy show the same numbers."""
        if self.queries is not None:
            self.top(row, k)  # the same message when k is too large
            return [float(s) for s in self.queries.t2v_score[row, :k]]
        scores = self._matrix()[row, self.top(row, k)]
        return [float(s) for s in registry.quantize_scores(np.asarray(scores, dtype=np.float32))]


@dataclass
class Run:
    path: Path                      # the run folder (holds test/) or the registered run's folder
    record: dict[str, Any]          # test/metrics.json (a registered run: its metrics.json)
    config: dict[str, Any]          # test/config.yaml or config.yaml ({} when neither exists)
    config_path: Path | None
    postprocessed: dict[str, dict[str, Any]] = field(default_factory=dict)  # flag -> metrics_<flag>.json
    _test: TestSet | None = field(default=None, repr=False)

    @property
    def registered(self) -> bool:
        """A run of the results registry (compact files), not a run folder with its matrices."""
        return registry.is_registry_record(self.record)

    @property
    def test_dir(self) -> Path:
        """The folder of the run's test artifacts: ``test/`` of a run folder, the registered run's folder itself."""
        return self.path if self.registered else self.path / "test"

    @property
    def record_path(self) -> Path:
        return self.test_dir / "metrics.json"

    @property
    def metrics(self) -> dict[str, float]:
        return self.record["metrics"]

    @property
    def name(self) -> str:
        return self.path.parent.name if re.fullmatch(r"version_\d+", self.path.name) else self.path.name

    @property
    def seed(self) -> int | None:
        seed = self.record.get("seed")
        if seed is None:
            seed = self.config.get("seed_everything")
        return int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None

    @property
    def dataset(self) -> str:
        return str(self.record.get("data", {}).get("dataset") or self.config.get("data", {}).get("class_path", "?")
                   .rsplit(".", 1)[-1].lower())

    @property
    def model_class(self) -> str:
        path = self.config.get("model", {}).get("class_path") or self.record.get("method") or "?"
        return str(path).rsplit(".", 1)[-1]

    @cached_property
    def flat_config(self) -> dict[str, Any]:
        return {k: v for k, v in flatten(self.config).items() if not is_bookkeeping(k)}

    @property
    def test(self) -> TestSet:
        if self._test is None:
            self._test = load_registered_test_set(self) if self.registered else load_test_set(self.test_dir)
        return self._test

    def postprocessed_test(self, flag: str) -> TestSet:
        """The post-processed scores of ``flag`` with the run's ids (not cached): ``sim_t2v_<flag>.npy`` (with
        ``sim_v2t_<flag>.npy`` when the flag scored v2t on its own) or ``queries_<flag>.npz``."""
        if self.registered:
            return load_registered_test_set(self, flag)
        test = load_test_set(self.test_dir, f"sim_t2v_{flag}.npy")
        v2t = self.test_dir / f"sim_v2t_{flag}.npy"
        if v2t.is_file():
            test.v2t_sim = _load_matrix(v2t, (len(test.text_ids), len(test.video_ids)), self.test_dir)
        else:  # QB-Norm re-scores t2v only: its v2t numbers are the plain matrix's
            test.has_v2t = False
        return test

    def read_text(self, name: str) -> str | None:
        """A text file of the run folder (``metrics.csv``), or its gzip-compressed registry copy (``<name>.gz``);
        None when neither exists."""
        plain, packed = self.path / name, self.path / f"{name}.gz"
        try:
            if plain.is_file():
                return plain.read_text()
            if packed.is_file():
                return gzip.decompress(packed.read_bytes()).decode()
        except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as err:
            raise ReportError(f"{plain if plain.is_file() else packed}: unreadable ({err}); restore it from the run "
                              "or the registry (git)") from err
        return None


def _load_matrix(path: Path, shape: tuple[int, int], test_dir: Path) -> np.ndarray:
    if not path.is_file():
        raise ReportError(f"{path}: missing; the paired comparison and the rank plots need it. Re-run "
                          "`python main.py test` with write_artifacts: true, or pass --no-matrices.")
    try:
        sim = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ReportError(f"{path}: not a readable .npy matrix ({err}); re-run `python main.py test`.") from err
    if sim.ndim != 2 or sim.shape != shape:
        raise ReportError(f"{path}: shape {sim.shape} disagrees with text_ids.json ({shape[0]} texts) and "
                          f"video_ids.json ({shape[1]} videos) in {test_dir}; the files come from different "
                          "test runs or were truncated. Re-run `python main.py test` for this run.")
    if np.isnan(sim).any():
        raise ReportError(f"{path}: contains NaN scores; ranks are undefined. Re-test a checkpoint that did "
                          "not diverge.")
    return sim


def load_test_set(test_dir: Path, matrix: str = "sim_t2v.npy") -> TestSet:
    """A run folder's similarity matrix with its ids, checked against each other."""
    sim_path = test_dir / matrix
    if not sim_path.is_file():
        raise ReportError(f"{sim_path}: missing; the paired comparison and the rank plots need it. Re-run "
                          "`python main.py test` with write_artifacts: true, or pass --no-matrices.")
    text_ids = _load_json(test_dir / "text_ids.json", "the row ids")
    video_ids = _load_json(test_dir / "video_ids.json", "the column ids")
    gt = _load_json(test_dir / "text_to_video.json", "the ground-truth columns")
    if not isinstance(text_ids, list) or not isinstance(video_ids, list):
        raise ReportError(f"{test_dir}: text_ids.json and video_ids.json must hold lists; re-run `python main.py "
                          "test` for this run.")
    sim = _load_matrix(sim_path, (len(text_ids), len(video_ids)), test_dir)
    gt_arr = np.asarray(gt, dtype=np.int64)
    if gt_arr.shape != (len(text_ids),) or (len(gt_arr) and (gt_arr.min() < 0 or gt_arr.max() >= len(video_ids))):
        raise ReportError(f"{test_dir / 'text_to_video.json'}: needs one column index in [0, {len(video_ids)}) per "
                          f"text ({len(text_ids)}); re-run `python main.py test` for this run.")
    return TestSet([str(t) for t in text_ids], [str(v) for v in video_ids], gt_arr, sim, source=sim_path)


def registered_split(run: Run) -> registry.SplitIds:
    """The study's test set a registered run's ``metrics.json`` names (``registry.test_set``)."""
    info = registry.registry_info(run.record, run.record_path)
    name = info.get("test_set")
    if not isinstance(name, str) or not registry.TEST_SET.fullmatch(name):
        raise ReportError(f"{run.record_path}: records no test set (`registry.test_set`), so it has no per-query "
                          "results; the report reads such runs with --no-matrices")
    return registry.read_split(run.path.parent / name, info.get("test_set_sha256"))


def load_registered_test_set(run: Run, name: str = "") -> TestSet:
    """A registered run's per-query results (``queries.npz``, or ``queries_<name>.npz``) with its study's ids."""
    info = registry.registry_info(run.record, run.record_path)
    file = registry.queries_file(name)
    if not any(m.get("queries") == file for m in info["matrices"] if isinstance(m, dict)):
        registered = [m.get("queries") for m in info["matrices"] if isinstance(m, dict) and m.get("queries")]
        raise ReportError(f"{run.path / file}: not registered with this run (its metrics.json lists "
                          f"{', '.join(registered) or 'no per-query file'}; it was registered with --no-matrix or "
                          "without that matrix): the paired comparison and the rank plots need it; pass "
                          "--no-matrices, or re-register the run from its run folder")
    ids = registered_split(run)
    queries = registry.read_queries(run.path / file, ids)
    return TestSet(list(ids.text_ids), list(ids.video_ids), np.asarray(ids.text_to_video, dtype=np.int64),
                   queries=queries, source=run.path / file)


def load_run(metrics_path: Path) -> Run:
    record = _load_json(metrics_path, "the test metrics")
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise ReportError(f"{metrics_path}: has no 'metrics' object, so it was not written by vtr's test step "
                          "(lightning_modules/base.py write_test_artifacts). Re-run `python main.py test` for "
                          "this run or leave it out.")
    missing = [k for k in REQUIRED_METRICS if not isinstance(record["metrics"].get(k), (int, float))]
    if missing:
        raise ReportError(f"{metrics_path}: 'metrics' lacks numeric {', '.join(missing)}. Re-run `python main.py "
                          "test` for this run or leave it out.")
    # a registered run keeps its files in its own folder; a run folder in test/ below it
    run_dir = metrics_path.parent if registry.is_registry_record(record) else metrics_path.parent.parent
    config: dict[str, Any] = {}
    config_path = None
    for candidate in dict.fromkeys((metrics_path.parent / "config.yaml", run_dir / "config.yaml")):
        if candidate.is_file():
            try:
                loaded = yaml.safe_load(candidate.read_text())
            except (OSError, yaml.YAMLError) as err:
                raise ReportError(f"{candidate}: not valid YAML ({err}); restore it from the run or delete it so "
                                  "the report falls back to the other config file.") from err
            if not isinstance(loaded, dict):
                raise ReportError(f"{candidate}: expected a mapping (LightningCLI's resolved config).")
            config, config_path = loaded, candidate
            break
    return Run(run_dir, record, config, config_path, load_postprocessed(metrics_path.parent))


def load_postprocessed(test_dir: Path) -> dict[str, dict[str, Any]]:
    """``flag -> record`` of every ``metrics_<flag>.json`` in a test folder (written by ``postprocess: [...]``)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(test_dir.glob("metrics_*.json")):
        match = POSTPROCESSED_NAME.fullmatch(path.name)
        if match is None:
            continue
        record = _load_json(path, "the post-processed test metrics")
        metrics = record.get("metrics") if isinstance(record, dict) else None
        missing = [k for k in REQUIRED_POSTPROCESSED if not isinstance((metrics or {}).get(k), (int, float))]
        if missing or not isinstance(record.get("postprocess"), dict):
            raise ReportError(f"{path}: not a post-processed test record (needs numeric {', '.join(missing) or '-'} "
                              "and a 'postprocess' object, as lightning_modules/base.py writes). Re-run `python "
                              "main.py test` with the postprocess flags, or delete the file.")
        found[match.group(1)] = record
    return found


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Paths and glob patterns -> existing paths (a pattern or path that matches nothing is an error). A pattern's
    matches are its folders and ``metrics.json`` files: ``results/study/*`` also matches the study's
    ``test_set_<sha>.json``, which is no run."""
    paths: list[Path] = []
    for item in inputs:
        if glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            matches = [p for p in matches if p.is_dir() or p.name == "metrics.json"]
            if not matches:
                raise ReportError(f"{item}: the pattern matches nothing; check the path (quote it so the shell "
                                  "does not expand it first).")
            paths.extend(matches)
        else:
            path = Path(item)
            if not path.exists():
                raise ReportError(f"{path}: no such file or folder; pass run folders, sweep folders or globs.")
            paths.append(path)
    return paths


def is_run_record(path: Path) -> bool:
    """Whether ``path`` (a ``metrics.json``) is a run's: in a run folder's ``test/``, or a registered run's."""
    if path.parent.name == "test":
        return True
    try:
        return registry.is_registry_record(json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def find_metrics(path: Path) -> list[Path]:
    if path.is_file():
        if path.name == "metrics.json" and is_run_record(path):
            return [path]
        raise ReportError(f"{path}: is a file; pass a run folder (holding test/metrics.json), a registered run or a "
                          "folder of runs.")
    found = sorted(p for p in path.rglob("metrics.json") if is_run_record(p))
    if not found:
        raise ReportError(f"{path}: no run found (no test/metrics.json, and no registered run's metrics.json, below "
                          "it). A run is the folder `main.py fit` or `main.py test` logs to (runs/<name>/version_N/); "
                          "pass such folders, a sweep's --out folder, a results/ study, or a glob of them.")
    return found


def discover(inputs: list[str]) -> tuple[list[Run], list[Path]]:
    """Every run below the inputs (each once) and the input folders that are sweeps."""
    runs: dict[Path, Run] = {}
    sweeps: list[Path] = []
    for path in expand_inputs(inputs):
        found = find_metrics(path)
        for metrics_path in found:
            run = load_run(metrics_path)
            runs.setdefault(run.path.resolve(), run)
        if path.is_dir() and ((path / "sweep_summary.json").is_file() or len(found) > 1):
            sweeps.append(path)
    return list(runs.values()), sweeps


def has_training_rows(run: Run) -> bool:
    """Whether the run's ``metrics.csv`` logged a ``train/`` or ``val/`` value (a ``fit`` run, not a test only)."""
    try:
        text = run.read_text("metrics.csv")
    except ReportError:
        return False
    if text is None:
        return False
    try:
        reader = csv.DictReader(io.StringIO(text))
        columns = [c for c in reader.fieldnames or [] if c.startswith(("train/", "val/"))]
        return any(row.get(c) not in (None, "") for row in reader for c in columns)
    except csv.Error:
        return False


def checkpoint_path(run: Run) -> str | None:
    """The checkpoint a run was started from (``ckpt_path`` of its config or metrics.json), None when none."""
    ckpt = run.config.get("ckpt_path") or run.record.get("ckpt_path")
    return str(ckpt) if ckpt else None


def split_retests(runs: list[Run]) -> tuple[list[Run], list[tuple[Run, Run]]]:
    """Set apart the re-tests (``main.py test --ckpt_path``) of a checkpoint of another run in ``runs``.

    A re-test has a ``ckpt_path`` and no training rows in its ``metrics.csv``; it belongs to the run whose folder
    holds the checkpoint (the resolved path, else the same ``<name>/version_N`` ending when that is unique).
    A resumed ``fit`` also has a ``ckpt_path`` but logs training rows, so it stays a run; so does a test of a
    checkpoint whose training run is not among the inputs (it is then the only result of that model).
    Returns the runs without those re-tests and the (re-test, original) pairs.
    """
    kept, retests = [], []
    trained = [r for r in runs if has_training_rows(r)]
    for run in runs:
        ckpt = checkpoint_path(run)
        original = None
        if ckpt and not has_training_rows(run):
            path = Path(ckpt).expanduser()
            # the registry writes a checkpoint path relative to the registered run's folder
            resolved = (run.path / path if run.registered and not path.is_absolute() else path).resolve()
            exact = [r for r in trained if r is not run and r.path.resolve() in resolved.parents]
            tail = [r for r in trained if r is not run and len(path.parts) >= 4
                    and path.parts[-4:-2] == r.path.parts[-2:]]
            original = exact[0] if exact else tail[0] if len(tail) == 1 else None
        if original is None:
            kept.append(run)
        else:
            retests.append((run, original))
    return kept, retests


def sweep_summary(path: Path) -> list[dict[str, Any]] | None:
    summary = path / "sweep_summary.json"
    if not summary.is_file():
        return None
    data = _load_json(summary, "the sweep summary")
    if not isinstance(data, list):
        raise ReportError(f"{summary}: expected a list of runs (experiments/sweep.py writes one).")
    return data


@dataclass
class Group:
    """Runs that differ only in seed."""

    key: tuple
    runs: list[Run]
    ident: str = ""        # G1, G2, ...
    method: str = ""
    variant: str = ""      # the configuration differences that are not part of the method

    @property
    def label(self) -> str:
        return f"{self.method} [{self.variant}]" if self.variant else self.method

    @property
    def dataset(self) -> str:
        return self.runs[0].dataset

    @property
    def model_class(self) -> str:
        return self.runs[0].model_class

    @property
    def config(self) -> dict[str, Any]:
        return self.runs[0].flat_config

    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]

    def values(self, metric: str) -> list[float]:
        return [float(r.metrics[metric]) for r in self.runs if r.metrics.get(metric) is not None]

    def postprocessed_runs(self, flag: str) -> list[Run]:
        return [r for r in self.runs if flag in r.postprocessed]

    def postprocessed_values(self, flag: str, metric: str) -> list[float]:
        """``metric`` of the post-processed record ``flag`` of every run that has one (never the plain value)."""
        return [float(r.postprocessed[flag]["metrics"][metric]) for r in self.postprocessed_runs(flag)
                if r.postprocessed[flag]["metrics"].get(metric) is not None]


def _code_version(run: Run) -> str:
    """The commit, and for a run made with uncommitted changes (``git_dirty``) the hash of its diff too: such a run
    is not the same code as a clean run of the commit."""
    sha = str(run.record.get("git_sha") or "unknown")[:7]
    if run.record.get("git_dirty") is True:
        sha += "+diff" + str(run.record.get("git_diff_sha256") or "unknown")[:8]
    return sha


def group_runs(runs: list[Run], merge_commits: bool = False) -> list[Group]:
    """Group by (class, dataset, test protocol, config without seed and bookkeeping, code version) and label
    each group: method = class (+ CLIP4Clip's sim_header) + the model arguments that tell groups of the same class
    and dataset apart; variant = the other differing settings."""
    by_key: dict[tuple, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (str(r.path))):
        cfg = tuple(sorted((k, repr(v)) for k, v in run.flat_config.items()))
        code = "" if merge_commits else _code_version(run)
        protocol = str(run.record.get("data", {}).get("protocol", ""))
        by_key.setdefault((run.model_class, run.dataset, protocol, cfg, code), []).append(run)
    groups = [Group(key, sorted(members, key=lambda r: (r.seed is None, r.seed or 0, str(r.path))))
              for key, members in by_key.items()]
    families: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        families.setdefault((g.model_class, g.dataset), []).append(g)
    for family in families.values():
        keys = sorted(set().union(*(g.config for g in family)))
        differing = [k for k in keys if len({repr(g.config.get(k, "<unset>")) for g in family}) > 1]
        codes = {g.key[4] for g in family}
        protocols = {g.key[2] for g in family}
        for g in family:
            method = [g.model_class]
            header = g.config.get("model.init_args.sim_header")
            if header is not None:
                method.append(str(header))
            variant = []
            for k in differing:
                if k == "model.init_args.sim_header" or k not in g.config:  # unset: an argument its code lacked
                    continue
                text = f"{short_key(k)}={fmt_value(g.config.get(k, '<unset>'))}"
                is_method = k.startswith("model.") and not k.startswith("model.init_args.backbone")
                (method if is_method else variant).append(text)
            if len(protocols) > 1:
                variant.append(f"protocol={g.key[2]}")
            if len(codes) > 1:
                variant.append(f"code={g.key[4]}")
            g.method, g.variant = " ".join(method), ", ".join(variant)
    groups.sort(key=lambda g: (g.dataset, g.method, g.variant))
    for i, g in enumerate(groups, 1):
        g.ident = f"G{i}"
    return groups
