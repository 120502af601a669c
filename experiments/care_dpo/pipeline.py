"""The whole CaRe-DPO pipeline as one resumable command (``python -m experiments.care_dpo --config ...``).

Stages, each skipped when its output exists (a killed run started again continues with the first unfinished stage;
a training stage resumes from its ``last.ckpt``, exactly, through ``main.py fit --ckpt_path``):

1. ``sft``: ``main.py fit`` of the captioner on the ground-truth captions of the training videos;
2. ``captions/sft.jsonl``: ``main.py predict`` of the SFT captioner over every video (greedy);
3. ``retriever/sft-role``: a ``CaReRetriever`` trained on those captions: the frozen relevance scorer, and the
   "SFT captions" row of the results;
4. ``samples/<key>.jsonl``: ``main.py predict`` of the sampling config (``CaptionSampler``): K sampled captions per
   training video with their reference log-probabilities, on the config's accelerator, devices and precision (which
   must be DG-DPO's: its policy is compared with them);
5. ``preferences/<key>.jsonl``: ``main.py predict`` of the scoring config (``PreferenceScorer``): the scored preference
   store and its sidecar ``<key>.jsonl.meta.json`` (the scorer checkpoint, its sha256 and the split that selected
   it; the sampled split's ids and counts; the reference log-probabilities' precision and features);
6. ``dgdpo/<key>``: ``main.py fit`` of DG-DPO from the SFT checkpoint on the store's pairs (groups, β, ω, γ);
7. ``captions/dgdpo-<key>.jsonl``: the DG-DPO captioner over every video;
8. ``retriever/<source>-<role>``: a retriever trained and tested on each caption source (``zero_shot`` - the
   given zero-shot captions -, ``sft``, ``dgdpo``), with and without role embeddings as configured;
9. ``summary.json`` in ``out``: every test metric, the discriminability of each caption source (how often a
   video's caption alone picks it out of its near-duplicate family, and out of the whole test set), the attribute
   precision/recall of each source on SynthVTR, the wall time of every stage and the pipeline's provenance
   (``git_sha``, ``git_dirty``, ``git_diff_sha256``, ``environment``: ``lightning_modules.provenance``).

Stage outputs live in ``work`` under keys of the settings they depend on, so runs that differ only in a later stage
(an ablation over groups, β or roles) share the earlier ones; a lock file per stage keeps two concurrent runs from
computing the same stage twice. Sampling and scoring read the retriever configs' dataset (its ``aux_captions`` left
out: they take their captions from their own files), wrapped into ``TrainVideoChunks``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from datamodules.atomic import write_text_atomic
from vtr.resources import resolve

log = logging.getLogger(__name__)

Role = Literal["role", "norole"]
STAGE_KINDS = ("sft", "dgdpo", "caption", "retriever", "sample", "score")
# Lightning's short precision names and the ones it reports (trainer.precision)
PRECISION_NAMES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}


@dataclass
class Sampling:
    """Stage 4: ``num_samples`` (K) captions per training video at ``temperature`` (``top_p`` nucleus, optional)."""

    num_samples: int = 4
    temperature: float = 1.0
    top_p: float | None = None
    max_new_tokens: int | None = None
    batch_size: int = 16


@dataclass
class Scoring:
    """Stage 5: the relevance rule (``margin``, ``rank``, ``score``), the candidate group size and the inter-video
    neighbour rule (``embedding``: nearest training video; ``family``: nearest member of the SynthVTR family)."""

    relevance: Literal["margin", "rank", "score"] = "margin"
    candidates: int = 7
    neighbour: Literal["embedding", "family"] = "embedding"


@dataclass
class DGDPO:
    """Stage 6: which groups train (``intra``, ``inter``), β, ω (``inter_weight``), γ (``sft_weight``) and, when set,
    the epochs (default: the DG-DPO config's)."""

    groups: list[str] = field(default_factory=lambda: ["intra", "inter"])
    beta: float = 0.5
    inter_weight: float = 1.0
    sft_weight: float = 0.0
    max_epochs: int | None = None


class PipelineError(ValueError):
    """A bad setting or a failed stage; the message names it and what to do."""


def _key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_marker(done: Path, payload: dict[str, Any]) -> None:
    """A stage's ``done`` marker, written atomically (a temporary file in its folder, fsynced, renamed over it): a kill
    leaves no marker or the whole one, never an empty file that would fail every restart."""
    write_text_atomic(done, json.dumps(payload))


def _read_marker(done: Path) -> dict[str, Any] | None:
    """A stage's ``done`` marker, or None (the stage is not done) when it is absent, or empty or torn (what a kill
    during the non-atomic write of older versions left): warned about, and the stage runs again (it resumes)."""
    if not done.exists():
        return None
    try:
        marker = json.loads(done.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        marker = None
    if not isinstance(marker, dict) or type(marker.get("seconds")) not in (int, float):
        log.warning("%s: stage marker is empty or torn (a run was killed while writing it); the stage is treated as "
                    "not done and runs again", done)
        return None
    return marker


def _marker_seconds(done: Path) -> float:
    """The stage time its marker records (it exists: the stage just ran, or ``_stage`` found it done)."""
    marker = _read_marker(done)
    if marker is None:
        raise PipelineError(f"{done}: the stage marker vanished or was damaged while this run held the stage's lock")
    return marker["seconds"]


class Pipeline:
    """One seed of the pipeline (see the module docstring); ``run()`` returns the summary."""

    def __init__(self, sft_config: str | list[str], dgdpo_config: str | list[str], caption_config: str | list[str],
                 retriever_config: str | list[str], work: str, out: str, seed: int = 0,
                 zero_shot_captions: str | None = None, data_config: str | list[str] | None = None,
                 sample_config: str | list[str] | None = None, score_config: str | list[str] | None = None,
                 sampling: Sampling | None = None, scoring: Scoring | None = None, dgdpo: DGDPO | None = None,
                 sources: list[str] | None = None, roles: list[Role] | None = None,
                 role_ablation_sources: list[str] | None = None, overrides: dict[str, list[str]] | None = None,
                 discriminability_families: bool = True) -> None:
        self.configs: dict[str, list[str]] = {
            name: [paths] if isinstance(paths, str) else list(paths)
            for name, paths in (("sft", sft_config), ("dgdpo", dgdpo_config), ("caption", caption_config),
                                ("retriever", retriever_config), ("sample", sample_config or []),
                                ("score", score_config or []), ("data", data_config or []))}
        for name, paths in self.configs.items():
            for path in paths:
                if not Path(resolve(path)).is_file():
                    raise PipelineError(f"{name}_config: {path} does not exist (neither under {Path.cwd()} nor "
                                        "among the shipped configs: vtr configs list)")
        absent = [f"{name}_config" for name in STAGE_KINDS if not self.configs[name]]
        if absent:
            raise PipelineError(f"{', '.join(absent)} missing: every stage needs its config (sft_config, dgdpo_config, "
                                "caption_config, retriever_config, sample_config, score_config; the shipped ones "
                                "are in configs/care_dpo/)")
        self.work = Path(work) / f"seed{seed}"
        self.out = Path(out)
        self.seed = seed
        self.zero_shot_captions = zero_shot_captions
        self.sampling = sampling or Sampling()
        self.scoring = scoring or Scoring()
        self.dgdpo = dgdpo or DGDPO()
        self.sources = sources or (["zero_shot", "sft", "dgdpo"] if zero_shot_captions else ["sft", "dgdpo"])
        unknown = sorted(set(self.sources) - {"zero_shot", "sft", "dgdpo"})
        if unknown:
            raise PipelineError(f"sources: unknown {unknown}; choose from zero_shot, sft, dgdpo")
        if "zero_shot" in self.sources and not zero_shot_captions:
            raise PipelineError("sources has zero_shot but zero_shot_captions is not set")
        self.roles = roles or ["role"]
        self.role_ablation_sources = role_ablation_sources or []
        # extra main.py arguments per stage kind (STAGE_KINDS), e.g. a test's sizes
        self.overrides = {kind: list(args) for kind, args in (overrides or {}).items()}
        unknown_stages = sorted(set(self.overrides) - set(STAGE_KINDS))
        if unknown_stages:
            raise PipelineError(f"overrides: unknown stages {unknown_stages}; use {list(STAGE_KINDS)}")
        sampled, trained = self.trainer_setting("sample", "precision"), self.trainer_setting("dgdpo", "precision")
        if sampled != trained:
            # DG-DPO compares its policy's log-probabilities with the stored reference ones: at the first step the
            # policy is the reference, and the DPO rewards are 0 only when both are computed under one precision
            raise PipelineError(f"the sampling stage runs under precision {sampled!r} but DG-DPO trains under "
                                f"{trained!r}: set trainer.precision of {self.configs['sample']} (or its "
                                "overrides) to DG-DPO's, so that the reference log-probabilities match the policy's")
        self.discriminability_families = discriminability_families
        self.timings: dict[str, float] = {}
        self.skipped: list[str] = []
        self.ran: set[str] = set()

    def retriever_runs(self) -> list[str]:
        """``<source>-<role>`` of every retriever this run trains and tests (the summary's ``retrieval`` keys)."""
        return [f"{source}-{role}" for source in self.sources
                for role in sorted(set(self.roles) | ({"role", "norole"} if source in self.role_ablation_sources
                                                      else set()))]

    # ------------------------------------------------------------------ stage plumbing
    def _main(self, kind: str, args: list[str], log_path: Path) -> None:
        # the suite's CLI as `vtr` runs it (python main.py in a checkout); from the same working directory, so it
        # imports the same copy of the suite as this process, and the stage configs' relative paths mean the same
        cmd = [sys.executable, "-m", "vtr", *args, *self.overrides.get(kind, [])]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as fh:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=os.getcwd())
        if code != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise PipelineError(f"stage command failed ({code}): {' '.join(cmd)}\nlog {log_path}:\n" + "\n".join(tail))

    def _digest(self, kind: str, body: dict[str, Any]) -> str:
        """What a stage's output depends on: its config files' text, its overlay and its overrides."""
        texts = [self._resolve(path).read_text() for path in self.configs[kind]]
        return _key(texts, body, self.overrides.get(kind, []))

    def _overlay(self, directory: Path, name: str, body: dict[str, Any]) -> str:
        path = directory / f"{name}.overlay.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        return str(path)

    def trainer_setting(self, kind: str, key: str) -> Any:
        """The ``trainer.<key>`` a stage runs with: its configs' (the last that sets it) and then its overrides'
        (``--trainer.<key>=<value>`` or ``--trainer.<key> <value>``); precision as Lightning reports it."""
        value: Any = None
        for path in self.configs[kind]:
            trainer = (yaml.safe_load(self._resolve(path).read_text()) or {}).get("trainer") or {}
            if key in trainer:
                value = trainer[key]
        args = self.overrides.get(kind, [])
        flag = f"--trainer.{key}"
        for i, arg in enumerate(args):
            if arg.startswith(flag + "="):
                value = yaml.safe_load(arg[len(flag) + 1:])
            elif arg == flag and i + 1 < len(args):
                value = yaml.safe_load(args[i + 1])
        if key == "precision":
            value = "32-true" if value is None else PRECISION_NAMES.get(str(value), str(value))
        return value

    def _trainer_overlay(self, run_dir: Path) -> dict[str, Any]:
        return {"seed_everything": self.seed,
                "trainer": {"default_root_dir": str(run_dir),
                            "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                        "init_args": {"save_dir": str(run_dir), "name": "", "version": "run"}}]}}

    def _stage(self, name: str, done: Path, digest: str | None = None) -> bool:
        """True when the stage must run (its ``done`` marker is absent, or empty or torn); records skipped stages. A
        finished stage whose recorded ``digest`` (its config files' text and its arguments) differs from this run's is
        an error, not a silent reuse of outputs made with other settings."""
        marker = _read_marker(done)
        if marker is not None:
            recorded = marker.get("digest")
            if digest is not None and recorded is not None and recorded != digest:
                raise PipelineError(f"{name}: {done.parent} was made with other settings (a stage config or an "
                                    "override changed); delete that folder to redo the stage, or use another work")
            if name not in self.ran:  # not the same stage asked for twice in this run (the scorer is a source too)
                self.skipped.append(name)
            return False
        self.ran.add(name)
        return True

    def _fit(self, name: str, kind: str, run_dir: Path, overlay: dict[str, Any], test: bool) -> Path:
        """``main.py fit`` into ``run_dir``; resumes from its ``last.ckpt`` after a kill. Returns the checkpoint
        the later stages use (``last.ckpt``; the retrievers are tested on their best one by ``fit`` itself)."""
        done = run_dir / "done.json"
        last = run_dir / "run" / "checkpoints" / "last.ckpt"
        body = self._trainer_overlay(run_dir)
        _merge(body, overlay)
        digest = self._digest(kind, body)
        with _locked(run_dir):
            if self._stage(name, done, digest):
                started = time.perf_counter()
                args = ["fit", *_config_args(self.configs[kind]), "--config", self._overlay(run_dir, "stage", body),
                        "--test_after_fit", str(test).lower()]
                if last.is_file():
                    args += ["--ckpt_path", str(last)]
                self._main(kind, args, run_dir / "stage.log")
                if not last.is_file():
                    raise PipelineError(f"{name}: {last} was not written; does {self.configs[kind]} save a last "
                                        "checkpoint (ModelCheckpoint save_last: true)?")
                seconds = round(time.perf_counter() - started, 1)
                _write_marker(done, {"seconds": seconds, "checkpoint": str(last), "digest": digest})
            self.timings[name] = _marker_seconds(done)
        return last

    def _caption(self, name: str, checkpoint: Path, output: Path) -> Path:
        done = output.with_name(output.name + ".done.json")
        body = {"trainer": {"default_root_dir": str(output.parent / f"{output.stem}-predict"),
                            "callbacks": [{"class_path": "CaptionWriter",
                                           "init_args": {"output": str(output.resolve())}}]},
                "model": {"init_args": {"backend": {"init_args": {"checkpoint": str(checkpoint)}}}}}
        digest = self._digest("caption", body)
        with _locked(output):
            if self._stage(name, done, digest):
                started = time.perf_counter()
                self._main("caption", ["predict", *_config_args(self.configs["caption"]),
                            "--config", self._overlay(output.parent, output.stem, body)],
                           output.parent / f"{output.stem}.log")
                _write_marker(done, {"seconds": round(time.perf_counter() - started, 1), "digest": digest})
            self.timings[name] = _marker_seconds(done)
        return output

    # ------------------------------------------------------------------ the stages
    def run(self) -> dict[str, Any]:
        total = time.perf_counter()
        work = self.work
        sft = self._fit("sft", "sft", work / "sft", {}, test=False)
        captions = {"sft": self._caption("captions_sft", sft, work / "captions" / "sft.jsonl")}
        scorer_dir = work / "retriever" / "sft-role"
        scorer = self._retriever("sft", "role", captions["sft"], scorer_dir)
        samples_key = _key(asdict(self.sampling))
        samples = work / "samples" / f"{samples_key}.jsonl"
        self._sample(sft, samples)
        store_key = _key(samples_key, asdict(self.scoring))
        store = work / "preferences" / f"{store_key}.jsonl"
        self._score(scorer, samples, captions["sft"], store)
        dgdpo_key = _key(store_key, asdict(self.dgdpo))
        dgdpo_overlay: dict[str, Any] = {
            "model": {"init_args": {"init_checkpoint": str(sft), "beta": self.dgdpo.beta,
                                    "inter_weight": self.dgdpo.inter_weight, "sft_weight": self.dgdpo.sft_weight}},
            "data": {"init_args": {"store": str(store.resolve()), "groups": list(self.dgdpo.groups)}}}
        if self.configs["data"]:  # the dataset's data section, wrapped: the DG-DPO config then holds no data itself
            videos = self._data_section(self.configs["data"])
            videos.setdefault("init_args", {})["feature_cache"] = True
            dgdpo_overlay["data"] = {"class_path": "PreferenceDataModule",
                                     "init_args": {**dgdpo_overlay["data"]["init_args"], "videos": videos}}
        if self.dgdpo.max_epochs is not None:
            dgdpo_overlay["trainer"] = {"max_epochs": self.dgdpo.max_epochs}
        policy = self._fit("dgdpo", "dgdpo", work / "dgdpo" / dgdpo_key, dgdpo_overlay, test=False)
        captions["dgdpo"] = self._caption("captions_dgdpo", policy, work / "captions" / f"dgdpo-{dgdpo_key}.jsonl")
        if self.zero_shot_captions:
            captions["zero_shot"] = Path(self.zero_shot_captions)
        runs: dict[str, dict[str, Any]] = {}
        for name in self.retriever_runs():
            source, role = name.rsplit("-", 1)
            run_dir = work / "retriever" / (name + (f"-{dgdpo_key}" if source == "dgdpo" else ""))
            self._retriever(source, role, captions[source], run_dir)
            runs[name] = _test_metrics(run_dir)
        from experiments.care_dpo.caption_quality import caption_quality
        from lightning_modules.provenance import run_provenance

        quality = {source: caption_quality(self._data_config(), captions[source],
                                           families=self.discriminability_families)
                   for source in self.sources}
        summary = {"seed": self.seed, "settings": {"sampling": asdict(self.sampling), "scoring": asdict(self.scoring),
                                                   "dgdpo": asdict(self.dgdpo), "configs": self.configs,
                                                   "zero_shot_captions": self.zero_shot_captions},
                   "keys": {"samples": samples_key, "store": store_key, "dgdpo": dgdpo_key},
                   "retrieval": runs, "captions": quality, "preference_pairs": _pair_counts(store),
                   "dgdpo_train": _last_train_stats(work / "dgdpo" / dgdpo_key),
                   "timings_s": self.timings, "skipped_stages": self.skipped,
                   "wall_s": round(time.perf_counter() - total, 1),
                   # the pipeline's code and machine (each retriever's metrics.json records its own: `retrieval`)
                   **run_provenance()}
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _retriever(self, source: str, role: Role, captions: Path, run_dir: Path) -> Path:
        overlay = {"model": {"init_args": {"role_embeddings": role == "role"}},
                   "data": {"init_args": {"aux_captions": {"supplement": str(Path(captions).resolve())
                                                           if Path(captions).exists() else str(captions)}}}}
        name = f"retriever_{source}_{role}"
        self._fit(name, "retriever", run_dir, overlay, test=True)
        best = sorted((run_dir / "run" / "checkpoints").glob("best-*.ckpt"))
        return best[-1] if best else run_dir / "run" / "checkpoints" / "last.ckpt"

    def _data_section(self, paths: list[str]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for path in paths:
            section = yaml.safe_load(self._resolve(path).read_text()).get("data")
            if section:
                _merge(data, section)
        return data

    def _data_config(self) -> Any:
        """The retriever configs' data module (the videos every stage shares), built from their YAML."""
        from experiments.care_dpo.caption_quality import data_module_from_section

        return data_module_from_section(self._data_section(self.configs["retriever"]),
                                        self.overrides.get("retriever", []))

    @staticmethod
    def _resolve(path: str) -> Path:
        return Path(resolve(path))

    def stage_videos(self, feature_cache: bool | None = None) -> dict[str, Any]:
        """The retriever configs' data section with the retriever overrides applied, without ``aux_captions``: the
        dataset sampling and scoring read (``feature_cache`` forced when given)."""
        from experiments.care_dpo.caption_quality import apply_data_overrides

        videos = apply_data_overrides(self._data_section(self.configs["retriever"]),
                                      self.overrides.get("retriever", []))
        init = videos.setdefault("init_args", {})
        init.pop("aux_captions", None)
        if feature_cache is not None:
            init["feature_cache"] = feature_cache
        return videos

    def _predict(self, name: str, kind: str, output: Path, body: dict[str, Any]) -> None:
        """``main.py predict`` of a stage config that writes ``output``; skipped when done, and a killed run started
        again continues where it stopped (the stage's own writer resumes)."""
        done = output.with_name(output.name + ".done.json")
        body = {"trainer": {"default_root_dir": str(output.parent / f"{output.stem}-predict")}, **body}
        digest = self._digest(kind, body)
        with _locked(output):
            if self._stage(name, done, digest):
                started = time.perf_counter()
                self._main(kind, ["predict", *_config_args(self.configs[kind]),
                                  "--config", self._overlay(output.parent, output.stem, body)],
                           output.parent / f"{output.stem}.log")
                if not output.is_file():
                    raise PipelineError(f"{name}: {output} was not written (log {output.parent / output.stem}.log)")
                _write_marker(done, {"seconds": round(time.perf_counter() - started, 1), "digest": digest})
            self.timings[name] = _marker_seconds(done)

    def _sample(self, sft: Path, samples: Path) -> None:
        s = self.sampling
        # the chunk is the sampling batch and carries its own seed: the same records on any number of devices
        self._predict("sample", "sample", samples, {
            "model": {"init_args": {"checkpoint": str(sft.resolve()), "output": str(samples.resolve()),
                                    "num_samples": s.num_samples, "temperature": s.temperature, "top_p": s.top_p,
                                    "max_new_tokens": s.max_new_tokens, "seed": self.seed}},
            "data": {"class_path": "TrainVideoChunks",
                     "init_args": {"videos": self.stage_videos(feature_cache=True), "chunk_size": s.batch_size}}})

    def _score(self, scorer: Path, samples: Path, reference: Path, store: Path) -> None:
        s = self.scoring
        self._predict("score", "score", store, {
            "model": {"init_args": {"checkpoint": str(scorer.resolve()), "samples": str(samples.resolve()),
                                    "reference_captions": str(reference.resolve()), "output": str(store.resolve()),
                                    "relevance": s.relevance, "candidates": s.candidates, "neighbour": s.neighbour}},
            "data": {"class_path": "TrainVideoChunks", "init_args": {"videos": self.stage_videos()}}})


def _config_args(paths: list[str]) -> list[str]:
    return [arg for path in paths for arg in ("--config", path)]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _test_metrics(run_dir: Path) -> dict[str, Any]:
    found = sorted(run_dir.glob("**/test/metrics.json"))
    if not found:
        raise PipelineError(f"{run_dir}: no test/metrics.json (the retriever's fit did not test)")
    record = json.loads(found[-1].read_text())
    return {**record["metrics"], "seed": record.get("seed"), "git_sha": record.get("git_sha"),
            "git_dirty": record.get("git_dirty"), "git_diff_sha256": record.get("git_diff_sha256"),
            "ckpt_path": record.get("ckpt_path"), "path": str(found[-1])}


def _pair_counts(store: Path) -> dict[str, int]:
    from datamodules.preferences import preference_pairs, read_preference_store

    _, counts = preference_pairs(read_preference_store(store), ("intra", "inter"), str(store))
    return counts


def _last_train_stats(run_dir: Path) -> dict[str, float]:
    """The last logged value of each DG-DPO training statistic (metrics.csv)."""
    import csv

    path = run_dir / "run" / "metrics.csv"
    if not path.is_file():
        return {}
    last: dict[str, float] = {}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key.startswith("train/") and value not in ("", None):
                    last[key] = float(value)
    return last


def copy_for_sweep(summary: dict[str, Any], headline: str, logger_dir: Path) -> None:
    """Under the local sweep runner: the headline retriever's test metrics as ``<run>/version_0/test/metrics.json``."""
    source = Path(summary["retrieval"][headline]["path"])
    target = logger_dir / "version_0" / "test"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target / "metrics.json")
    (logger_dir / "version_0" / "summary.json").write_text(json.dumps(summary, indent=2))
