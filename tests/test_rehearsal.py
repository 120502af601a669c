"""Dress rehearsal (``make rehearse``, marker ``rehearsal``): every real-data pipeline whole, as its config header or
README section tells a user to run it, on two processes.

For each real-data experiment config (``configs/experiments/*.yaml`` on MSR-VTT, MSVD, VATEX and DiDeMo) the header's
command sequence runs as commands: the ``predict`` of the caption store it reads (``python main.py predict``), ExCae's
caption self-improvement (``python -m experiments.csi``), then ``python main.py fit`` (which tests its best
checkpoint), then ``python -m experiments.search index`` and ``query`` on that checkpoint (README "Search your own
videos"). For each ``configs/care_dpo/<dataset>.yaml``, its header: the zero-shot captions' ``predict``, then the
whole pipeline ``python -m experiments.care_dpo --config ...`` (SFT, captions, scorer, sampling, scoring, DG-DPO,
captions, retrievers), then search on its headline retriever. Every ``main.py`` command runs in a subprocess on two
processes (``--trainer.accelerator cpu --trainer.devices 2``: Lightning's DDP with gloo, its second rank started by
Lightning as for a user), and one training config also runs as two simulated nodes (two ``torchrun`` launches with
node ranks 0 and 1 on 127.0.0.1, one process each: docs/how-to/train.md, "2 nodes"). An overlay that only
swaps the backbone (``*_b16.yaml``) is its base experiment again under the tiny twin: that is checked, not rerun.
CaRe-DPO's pipelines first failed here (``KeyError: 'video0'`` at preference scoring: the
shipped scorer's trainable trunk leaves the feature cache without video rows); they run whole since its fix.

Overrides are those of ``tests/test_shipped_configs.py`` (whose runner this file reuses: data root, the tiny twin of
the same backbone class, sizes, accelerator, output directories; the loopback API server and the offline sentence
embedder for CSI) plus the two-process flags, the smaller sizes below and the tiny twins of CaRe-DPO's captioner.
Anything else is a named constant below with its reason. Trainable trunks stay trainable; ``precision``
(``bf16-mixed``), strategies, sampling and every method setting stay as shipped. Generated data, tiny models,
caption stores and CSI prompts are made once per session and shared by the cases that read them.

Python-level commands (``experiments.csi``, ``experiments.care_dpo``, ``experiments.search``) run in this process
through the function their ``python -m`` entry calls with the same arguments (their imports then cost nothing, and a
failure keeps its exception type); every ``main.py`` command is a subprocess, because Lightning starts the second rank
by re-running the command line.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import yaml

from tests.caption_helpers import FakeOpenAIAPI, read_store, save_tiny_qwen2, serve_fake_api
from tests.config_commands import CONFIGS, REPO, HeaderCommand, prerequisites, run_command
from tests.test_shipped_configs import (
    API_KEY_ENV,
    BATCH_SIZE,
    TINY_CLIP_CONFIG,
    TRAIN_BATCHES,
    ShippedRunner,
    class_name,
    flags,
)

pytestmark = pytest.mark.rehearsal

# the real datasets' data classes and the order the cases run in: per dataset, so that its data, narration and
# supplements are made once and read by the cases after
DATASETS = {"MSRVTT": "msrvtt", "MSVD": "msvd", "VATEX": "vatex", "DiDeMo": "didemo"}


def _data_class(command: HeaderCommand) -> str | None:
    """The data class a header command composes (the last ``data.class_path`` of its config files, as LightningCLI
    composes them); read from the YAML text, so collection stays fast."""
    found: str | None = None
    for path in command.configs:
        data = (yaml.safe_load(path.read_text()) or {}).get("data") or {}
        if data.get("class_path"):
            found = str(data["class_path"]).rsplit(".", 1)[-1]
    return found


def _backbone_only_overlay(path: Path) -> bool:
    """An overlay composed after another experiment that sets nothing but the backbone (and its loggers' names): with
    the backbone replaced by the tiny twin it is its base experiment again (checked by
    ``test_backbone_overlay_is_its_rehearsed_base_under_the_tiny_twin``)."""
    settings = yaml.safe_load(path.read_text())
    trainer = {k for k in settings.get("trainer", {}) if k != "logger"}
    model = settings.get("model", {}).get("init_args", {})
    return set(settings) <= {"model", "trainer"} and not trainer and set(model) == {"backbone"}


_CLASS_OF = {p: _data_class(run_command(p, "fit")) for p in sorted((CONFIGS / "experiments").glob("*.yaml"))}
_REAL = [p for p, data_class in _CLASS_OF.items() if data_class in DATASETS]
BACKBONE_OVERLAYS = [p for p in _REAL if _backbone_only_overlay(p)]
REAL_EXPERIMENTS = sorted((p for p in _REAL if p not in BACKBONE_OVERLAYS),
                          key=lambda p: (list(DATASETS).index(str(_CLASS_OF[p])), p.stem))
CARE_PIPELINES = [CONFIGS / "care_dpo" / f"{name}.yaml" for name in DATASETS.values()
                  if (CONFIGS / "care_dpo" / f"{name}.yaml").is_file()]
MULTI_NODE_EXPERIMENT = CONFIGS / "experiments" / "clip4clip_msrvtt.yaml"

# ------------------------------------------------------------------------------------------ sizes and processes
DEVICES = 2  # --trainer.devices: two processes, Lightning's DDP over gloo on CPU
NUM_FRAMES = 4  # frames per clip everywhere (narration, fit, search): the fake clips have 16
SUBPROCESS_TIMEOUT_S = 900  # one main.py command; a hung rank (a collective that never completes) fails the case
# CaRe-DPO's sizes: K = 2 samples of 6 tokens per training video (the shipped 8 x 40 on 4 CPU videos would be the
# whole budget), greedy captions of 6 tokens, 2-video batches
CARE_SAMPLING = {"num_samples": 2, "max_new_tokens": 6, "batch_size": 4}
CARE_MAX_NEW_TOKENS = 6
CARE_CAPTION_BATCH = 4

# ------------------------------------------------------------------------------------------ named overrides
# the captioner stages (SFT, DG-DPO) validate once, at the end of their one epoch, as the shipped configs do at the end
# of theirs (check_val_every_n_epoch equals their max_epochs); the shipped 5 and 2 would skip validation in one epoch
CAPTIONER_VALIDATE_AT_END = {"trainer.check_val_every_n_epoch": 1}
# search: conical optimisation's per-candidate second stage needs the evaluation split's data module, so its search
# is the first stage only (docs/how-to/search.md: the command refuses anything else and says so)
SEARCH_RERANK = {"ConicalEmbedding": 0}
SEARCH_QUERY = "a red square moves right"  # what the fake clips show (tests/conftest.py, tests/fake_datasets.py)
# the two simulated nodes: the README's multi-node command names the ddp strategy and the node count
MULTI_NODE_FLAGS = {"trainer.num_nodes": 2, "trainer.devices": 1, "trainer.strategy": "ddp"}


class RehearsalError(AssertionError):
    """A command of the rehearsal failed; the message holds the command and the tail of its log."""


@dataclass
class FitRun:
    """A finished ``main.py fit``: its run directory, composed (shipped) config and test record."""

    command: HeaderCommand
    config: dict[str, Any]
    run_dir: Path
    record: dict[str, Any]
    data_root: Path


@dataclass
class CareRun:
    """A finished ``python -m experiments.care_dpo``: its settings (the YAML), summary, work folder of the seed and
    the dataset it read."""

    settings: dict[str, Any]
    summary: dict[str, Any]
    work: Path
    data_class: str
    data_root: Path
    video_dir: str


class _RehearsalAPI(FakeOpenAIAPI):
    requests: ClassVar[list[dict[str, Any]]] = []  # this session's server only


class RehearsalRunner(ShippedRunner):
    """``ShippedRunner`` with every ``main.py`` command run as a subprocess on two processes."""

    def __init__(self, base: Path, api_base_url: str) -> None:
        super().__init__(base, api_base_url)
        self._qwen2: Path | None = None
        self.timings: dict[str, float] = {}

    # -------------------------------------------------------------- overrides
    def overrides(self, command: HeaderCommand, config: dict[str, Any], out_dir: Path) -> list[str]:
        values: dict[str, Any] = {"trainer.accelerator": "cpu", "trainer.devices": DEVICES,
                                  "data.init_args.num_frames": NUM_FRAMES}
        return [*super().overrides(command, config, out_dir), *flags(values)]  # later flags win

    def tiny_qwen2(self) -> Path:
        if self._qwen2 is None:
            self._qwen2 = save_tiny_qwen2(self.base / "tiny-qwen2")
        return self._qwen2

    # -------------------------------------------------------------- commands
    def start(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the repository, its output into ``log``, in its own process group (so that the ranks it
        starts are killed with it)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("$ " + " ".join(argv) + "\n")
        with log.open("a") as fh:
            return subprocess.Popen(argv, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "PYTHONPATH": str(REPO)})

    def finish(self, proc: subprocess.Popen[bytes], log: Path, label: str, started: float) -> None:
        """Wait for a started command; a failure or a timeout raises with the tail of its log."""
        try:
            code: int | None = proc.wait(timeout=max(1.0, started + SUBPROCESS_TIMEOUT_S - time.perf_counter()))
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # any rank that outlived rank 0 (a hung collective)
            proc.wait()
        self.timings[label] = self.timings.get(label, 0.0) + time.perf_counter() - started
        if code != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            what = f"timed out after {SUBPROCESS_TIMEOUT_S} s" if code is None else f"exit code {code}"
            raise RehearsalError(f"{label}: {what}: {' '.join(map(str, proc.args))}\n--- {log} (last lines) ---\n"
                                 f"{tail}")

    def run_command_line(self, argv: list[str], log: Path, label: str) -> None:
        started = time.perf_counter()
        self.finish(self.start(argv, log), log, label, started)

    def main_py(self, command: HeaderCommand, out_dir: Path) -> dict[str, Any]:
        """``python main.py <the header command> <overrides>`` as a subprocess; returns the composed config."""
        config = self.resolve(command)
        argv = [sys.executable, "main.py", *command.args(), *self.overrides(command, config, out_dir)]
        self.run_command_line(argv, out_dir / "command.log", str(command))
        return config

    def predict(self, command: HeaderCommand) -> Path:
        """A captioner's ``predict`` on two processes, once per session; checks and returns its caption store."""
        key = tuple(command.args())
        if key not in self.stores:
            self._runs += 1
            out_dir = self.base / "predict" / f"run{self._runs}"
            config = self.main_py(command, out_dir)
            data_class = class_name(config["data"])
            root = self.data_root(data_class)
            (writer,) = [cb for cb in config["trainer"]["callbacks"] if cb["class_path"].endswith("CaptionWriter")]
            store = Path(writer["init_args"]["output"])
            store = store if store.is_absolute() else root / store
            assert not list(store.parent.glob(store.name + ".rank*")), "the rank files were not merged"
            config["data"]["init_args"]["num_frames"] = NUM_FRAMES  # what the command ran with (check_store reads it)
            self.check_store(store, config, root)
            self.stores[key] = store
        return self.stores[key]

    def fit(self, command: HeaderCommand, name: str) -> FitRun:
        """``python main.py fit`` of a header command on two processes (it tests its best checkpoint)."""
        out_dir = self.base / "fit" / name
        config = self.main_py(command, out_dir)
        return self.finished_fit(command, config, out_dir, world_size=DEVICES)

    def finished_fit(self, command: HeaderCommand, config: dict[str, Any], out_dir: Path, world_size: int) -> FitRun:
        """The run a fit left in ``out_dir``, checked: it trained, validated and tested its best checkpoint on
        ``world_size`` processes, with the split's true counts and the shipped precision."""
        (metrics_json,) = out_dir.rglob("test/metrics.json")
        record = json.loads(metrics_json.read_text())
        run_dir = metrics_json.parent.parent
        data_class, data_args = class_name(config["data"]), config["data"]["init_args"]
        root = self.data_root(data_class)
        assert record["world_size"] == world_size, f"{command}: tested on {record['world_size']} processes"
        best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
        assert len(best) == 1 and Path(record["ckpt_path"]).resolve() == best[0].resolve(), (
            f"{command}: the test did not read the best checkpoint ({record['ckpt_path']}; {best})")
        # at most TRAIN_BATCHES steps: a split smaller than TRAIN_BATCHES global batches (DiDeMo's 4 training
        # paragraphs on 2 ranks x BATCH_SIZE) ends its epoch sooner
        last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        assert 0 < last["global_step"] <= TRAIN_BATCHES, f"{command}: {last['global_step']} optimiser steps"
        with (run_dir / "metrics.csv").open(newline="") as fh:
            logged = list(csv.DictReader(fh))
        assert any(row.get("val/t2v_R1") for row in logged), f"{command}: validation did not run"
        texts, videos = self.true_test_counts(data_class, data_args, root)
        assert (record["num_texts"], record["num_videos"]) == (texts, videos), command
        assert record["precision"] == str(config["trainer"]["precision"]), "the precision is not the shipped one"
        return FitRun(command, config, run_dir, record, root)

    # -------------------------------------------------------------- search
    def search(self, checkpoint: Path, captions: dict[str, Path], data_root: Path, video_dir: str, method: str,
               query: str, out: Path) -> list[dict[str, Any]]:
        """``python -m experiments.search index`` then ``query`` (docs/how-to/search.md) on ``checkpoint``
        over the dataset's video folder; returns the query's hits, checked against the folder."""
        from experiments.search.cli import main as search_main
        from experiments.search.indexer import generation_dir

        videos = data_root / video_dir
        index_args = ["index", "--ckpt", str(checkpoint), "--videos", str(videos), "--out", str(out),
                      "--accelerator", "cpu", "--num-workers", "0", "--no-progress"]
        if captions:
            index_args += ["--captions", *[f"{kind}={path}" for kind, path in sorted(captions.items())]]
        started = time.perf_counter()
        assert search_main(index_args) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        files = sorted(p for p in videos.rglob("*") if p.is_file())
        assert (manifest["num_videos"], manifest["num_indexed"], manifest["num_unreadable"]) == (len(files),
                                                                                                  len(files), 0)
        query_args = ["query", "--index", str(out), query, "-k", "3", "--json"]
        if method in SEARCH_RERANK:
            query_args += ["--rerank", str(SEARCH_RERANK[method])]
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert search_main(query_args) == 0
        self.timings[f"search index + query {out.name}"] = time.perf_counter() - started
        (result,) = json.loads(printed.getvalue())
        rows = generation_dir(out, manifest) / "videos.jsonl"  # the generation the manifest names
        indexed = {json.loads(line)["id"] for line in rows.read_text().splitlines() if line}
        hits = result["hits"]
        assert len(hits) == 3 and all(hit["video_id"] in indexed for hit in hits), hits
        return hits

    def search_fit(self, run: FitRun) -> list[dict[str, Any]]:
        data_args = run.config["data"]["init_args"]
        captions = {kind: run.data_root / path for kind, path in (data_args.get("aux_captions") or {}).items()}
        return self.search(sorted((run.run_dir / "checkpoints").glob("best-*.ckpt"))[0], captions, run.data_root,
                           data_args["video_dir"], class_name(run.config["model"]), SEARCH_QUERY,
                           self.base / "search" / run.command.configs[-1].stem)


    # -------------------------------------------------------------- CaRe-DPO's pipeline
    def tiny_clip(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The ``vtr-tiny-clip`` twin of an ``OpenCLIPBackbone`` spec (every other setting, freezing included, kept)."""
        if class_name(spec) != "OpenCLIPBackbone":
            pytest.fail(f"no tiny twin for backbone {spec['class_path']}")
        args = spec["init_args"]
        tiny = {**args, "model_name": "vtr-tiny-clip", "pretrained": None}
        if "max_words" in args:
            tiny["max_words"] = min(int(args["max_words"]), self.tiny_clip_context)
        return {**spec, "init_args": tiny}

    def care_stage_overrides(self, settings: dict[str, Any], root: Path, data_class: str) -> dict[str, list[str]]:
        """``overrides`` of ``python -m experiments.care_dpo``: per stage, the data root, the tiny twins, the sizes and
        the two processes (the pipeline sets each stage's output folders and loggers itself)."""
        def composed(key: str, subcommand: str) -> dict[str, Any]:
            paths = settings[key] if isinstance(settings[key], list) else [settings[key]]
            return self.resolve(HeaderCommand(REPO / paths[-1], subcommand, tuple(REPO / p for p in paths), ()))

        def batch(config: dict[str, Any]) -> dict[str, int]:
            # size: the key the stage's config fixes its batch with (the real configs state their paper's global
            # batch; a per-device batch on top of it is refused), as tests/test_shipped_configs.py sets it
            key = "global_batch_size" if config["data"]["init_args"].get("global_batch_size") else "batch_size"
            return {f"data.init_args.{key}": BATCH_SIZE}

        tiny_embed = int(json.loads(TINY_CLIP_CONFIG.read_text())["embed_dim"])
        processes = {"trainer.accelerator": "cpu", "trainer.devices": DEVICES}
        data = {"root": root, "num_workers": 0, "num_frames": NUM_FRAMES, "image_size": self.tiny_clip_image_size}
        if data_class == "MSRVTT":  # size: the held-out selection videos of the 12 fake training videos
            data["val_videos"] = 4
        one_epoch = {"trainer.max_epochs": 1, "trainer.limit_train_batches": TRAIN_BATCHES}
        stages: dict[str, dict[str, Any]] = {}
        for kind in ("sft", "dgdpo"):
            captioner = composed("sft_config", "fit")["model"]["init_args"]["captioner"]
            prefix = "model.init_args.captioner.init_args"
            values = {**processes, **one_epoch, **CAPTIONER_VALIDATE_AT_END,
                      f"{prefix}.lm": self.tiny_qwen2(), f"{prefix}.feature_dim": tiny_embed,
                      f"{prefix}.max_new_tokens": CARE_MAX_NEW_TOKENS,
                      f"{prefix}.video_tower": self.tiny_clip(captioner["init_args"]["video_tower"]),
                      **batch(composed(f"{kind}_config", "fit"))}
            # DG-DPO's PreferenceDataModule wraps the dataset of data_config (pipeline.py) and has its own batch size
            videos = "data.init_args.videos.init_args" if kind == "dgdpo" and settings.get("data_config") \
                else "data.init_args"
            values.update({f"{videos}.{k}": v for k, v in data.items()})
            stages[kind] = values
        stages["caption"] = {**processes, **{f"data.init_args.{k}": v for k, v in data.items()},
                             "data.init_args.predict_batch_size": CARE_CAPTION_BATCH,
                             "model.init_args.backend.init_args.batch_size": CARE_CAPTION_BATCH}
        retriever = composed("retriever_config", "fit")
        stages["retriever"] = {**processes, **one_epoch, **{f"data.init_args.{k}": v for k, v in data.items()},
                               **batch(retriever),
                               "model.init_args.backbone": self.tiny_clip(retriever["model"]["init_args"]["backbone"])}
        return {kind: flags(values) for kind, values in stages.items()}

    def care_dpo(self, command: HeaderCommand) -> CareRun:
        """``python -m experiments.care_dpo --config <pipeline>`` with the stage overrides, in this process (its entry
        point, ``experiments.care_dpo.cli.cli``, reads ``sys.argv``)."""
        from experiments.care_dpo.cli import cli as care_dpo_cli

        settings = yaml.safe_load(command.configs[-1].read_text())
        paths = settings["retriever_config"] if isinstance(settings["retriever_config"], list) \
            else [settings["retriever_config"]]
        retriever = HeaderCommand(command.source, "fit", tuple(REPO / p for p in paths), ())
        data_class = str(_data_class(retriever))  # the dataset every stage reads (pipeline.py: _data_config)
        root = self.data_root(data_class)
        folder = self.base / "care_dpo" / command.configs[-1].stem
        argv = [*command.args()[1:], "--work", str(folder / "work"), "--out", str(folder / "out"),
                *flags({f"sampling.{k}": v for k, v in CARE_SAMPLING.items()}),
                "--overrides", json.dumps(self.care_stage_overrides(settings, root, data_class))]
        started = time.perf_counter()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sys, "argv", ["python -m experiments.care_dpo", *argv])
            try:
                care_dpo_cli()
            finally:
                self.timings[str(command)] = time.perf_counter() - started
        return CareRun(settings, json.loads((folder / "out" / "summary.json").read_text()), folder / "work" / "seed0",
                       data_class, root, self.resolve(retriever)["data"]["init_args"]["video_dir"])


@pytest.fixture(scope="session")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RehearsalRunner]:
    with serve_fake_api(_RehearsalAPI) as base_url, pytest.MonkeyPatch.context() as env:
        env.setenv(API_KEY_ENV["model.init_args.backend.init_args.api_key_env"], "sk-rehearsal-not-a-key")
        runner = RehearsalRunner(tmp_path_factory.mktemp("rehearsal"), base_url)
        yield runner
        total = sum(runner.timings.values())
        print(f"\nrehearsal command times (s, total {total:.0f}):")
        for label, seconds in sorted(runner.timings.items(), key=lambda kv: -kv[1]):
            print(f"  {seconds:7.1f}  {label}")


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIGS).with_suffix(""))


@pytest.mark.parametrize("path", REAL_EXPERIMENTS, ids=_id)
def test_experiment_header_commands_on_two_processes_then_search(path: Path, rehearsal: RehearsalRunner) -> None:
    command = run_command(path, "fit")
    for needed in prerequisites(command):
        rehearsal.prerequisite(needed)
    run = rehearsal.fit(command, path.stem)
    rehearsal.search_fit(run)


@pytest.mark.parametrize("path", CARE_PIPELINES, ids=_id)
def test_care_dpo_pipeline_whole_on_two_processes_then_search(path: Path, rehearsal: RehearsalRunner) -> None:
    command = run_command(path, "care_dpo")
    for needed in prerequisites(command):
        rehearsal.prerequisite(needed)
    run = rehearsal.care_dpo(command)
    settings, summary = run.settings, run.summary
    runs = {f"{source}-{role}" for source in settings["sources"]
            for role in {*settings["roles"], *(["role", "norole"] if source in settings["role_ablation_sources"]
                                               else [])}}
    assert set(summary["retrieval"]) == runs and summary["skipped_stages"] == []
    for name, metrics in summary["retrieval"].items():
        record = json.loads(Path(metrics["path"]).read_text())
        assert record["world_size"] == DEVICES, f"{name}: tested on {record['world_size']} processes"
    assert summary["preference_pairs"]["inter"] > 0
    captions = run.work / "captions" / f"dgdpo-{summary['keys']['dgdpo']}.jsonl"
    assert sorted(r["video_id"] for r in read_store(captions)) == sorted(rehearsal.all_video_ids(run.data_class,
                                                                                                 run.data_root))
    rehearsal.search(Path(summary["retrieval"][settings["headline"]]["ckpt_path"]), {"supplement": captions},
                     run.data_root, run.video_dir, "CaReRetriever", SEARCH_QUERY,
                     # not search/care_dpo_<dataset>: the experiment config of that name indexes there
                     rehearsal.base / "search" / f"care_dpo_pipeline_{path.stem}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_simulated_nodes_train_and_test(rehearsal: RehearsalRunner) -> None:
    """The README's multi-node command as two ``torchrun`` launches (node ranks 0 and 1 on the loopback address, one
    process each), the way two machines start it: one run, world size 2, its best checkpoint tested."""
    command = run_command(MULTI_NODE_EXPERIMENT, "fit")
    for needed in prerequisites(command):
        rehearsal.prerequisite(needed)
    out_dir = rehearsal.base / "fit" / "two_nodes"
    config = rehearsal.resolve(command)
    args = ["main.py", *command.args(), *rehearsal.overrides(command, config, out_dir), *flags(MULTI_NODE_FLAGS)]
    port = _free_port()
    started = time.perf_counter()
    procs = []
    for node_rank in (0, 1):
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                    "--node_rank", str(node_rank), "--master_addr", "127.0.0.1", "--master_port", str(port)]
        log = out_dir / f"node{node_rank}.log"
        procs.append((rehearsal.start([*torchrun, *args], log), log))
    for node_rank, (proc, log) in enumerate(procs):
        rehearsal.finish(proc, log, f"{command} (node {node_rank} of 2)", started)
    rehearsal.finished_fit(command, config, out_dir, world_size=2)


@pytest.mark.parametrize("path", BACKBONE_OVERLAYS, ids=_id)
def test_backbone_overlay_is_its_rehearsed_base_under_the_tiny_twin(path: Path, rehearsal: RehearsalRunner) -> None:
    """An overlay that only swaps the backbone (a ``_b16`` file) composes, with the tiny twin in place of its
    backbone, exactly the base experiment the rehearsal runs: it is not run a second time."""
    overlay = run_command(path, "fit")
    base = HeaderCommand(overlay.configs[-2], "fit", overlay.configs[:-1], overlay.extra)
    assert base.configs[-1] in REAL_EXPERIMENTS, f"{path.name} overlays {base.configs[-1].name}, which is not rehearsed"
    composed = []
    for command in (overlay, base):
        config = rehearsal.resolve(command)
        with_overrides = HeaderCommand(command.source, "fit", command.configs,
                                       (*command.extra, *rehearsal.overrides(command, config, rehearsal.base)))
        resolved = rehearsal.resolve(with_overrides)
        resolved["trainer"].pop("logger")  # the run's name
        composed.append(resolved)
    assert composed[0] == composed[1]
