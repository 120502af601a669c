"""Every shipped experiment, ablation overlay and captioner config runs as a user runs it, on generated data.

Each ``configs/experiments/*.yaml``, ``configs/quickstart.yaml`` and ``configs/ablations/**/*.yaml`` runs the
``python main.py fit ...`` command of its own header (which base/data/model configs precede it), after the
``python main.py predict ...`` commands the headers of the composed files ask for (the caption store a NarVid
experiment reads, written by the shipped captioner config with a tiny random LLaVA or the simulated captioner):
a couple of training steps, validation, and the test of the best checkpoint. Each
``configs/captioners/*.yaml`` runs its header's ``predict`` command. The data are fake datasets in each
dataset's public layout (``tests/fake_datasets.py``, ``tests/conftest.py``) and a tiny SynthVTR, generated once
per session.

Overrides are limited to: the data root; the backbone (``OpenCLIPBackbone`` becomes the tiny
``vtr-tiny-clip`` of the same class with the shipped ``max_words`` when it fits the tiny context; the
``PretrainedTwoTower`` keeps its real offline weights); sizes (the training batch - the global one where the config
states it, else the per-device one -, image size for the tiny CLIP,
SynthVTR generator sizes, one epoch of ``TRAIN_BATCHES`` batches, no workers); the accelerator (CPU, one
device); the logger and output directories (into ``tmp_path``; W&B stays offline). Anything else is a named
constant below with its reason. ``precision``, ``train_sampling`` and every method setting stay as shipped.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from callbacks.caption_writer import CaptionWriter
from main import main
from tests.caption_helpers import FakeOpenAIAPI, read_store, save_tiny_llama, save_tiny_llava, serve_fake_api
from tests.config_commands import CONFIGS, REPO, HeaderCommand, prerequisites, run_command
from tests.conftest import make_fake_msrvtt
from tests.fake_datasets import make_fake_didemo, make_fake_msvd, make_fake_vatex

EXPERIMENTS = [*sorted((CONFIGS / "experiments").glob("*.yaml")), CONFIGS / "quickstart.yaml",
               *sorted((CONFIGS / "ablations").rglob("*.yaml"))]
CAPTIONERS = sorted((CONFIGS / "captioners").glob("*.yaml"))

# ------------------------------------------------------------------------------------------ allowed sizes
TRAIN_BATCHES = 2  # training steps per run (one epoch)
BATCH_SIZE = 2  # every fake train split has at least 4 samples, so an epoch has TRAIN_BATCHES full batches
FAKE_VIDEO_FRAMES = 16  # frames of every generated clip (conftest.write_video's default, SynthVTR below)
# SynthVTR generator sizes: 6 families of 2 videos of 32 px (1 test and 1 validation family, 8 training videos)
SYNTH_SIZES = {"num_families": 6, "family_size": 2, "test_families": 1, "val_families": 1, "video_size": 32,
               "video_frames": FAKE_VIDEO_FRAMES}
TINY_CLIP_CONFIG = REPO / "lightning_modules" / "backbones" / "model_configs" / "vtr-tiny-clip.json"

# ------------------------------------------------------------------------------------------ named overrides
# TransformersVLM: the tiny random LLaVA of tests/caption_helpers.py instead of llava-hf/llava-1.5-7b-hf
# (no hub access in tests; 7B weights do not fit a CPU test). Its path is set per session.
VLM_WEIGHTS_KEY = "model.init_args.backend.init_args.model"
# random weights rarely emit EOS, so the shipped 1024 (narration) / 77 (supplement) new tokens per request would
# generate for minutes on CPU; 4 tokens are a caption all the same
VLM_MAX_NEW_TOKENS = {"model.init_args.backend.init_args.max_new_tokens": 4}
# random weights may emit EOS first, an empty caption, which the caption store rightly refuses to load
VLM_MIN_NEW_TOKENS = {"model.init_args.backend.init_args.min_new_tokens": 2}
# TextRewrite's generator (a text-only LLM; SmolLM2-135M-Instruct offline): the tiny random Llama of
# tests/caption_helpers.py through TransformersTextLM (SmolLM2's own class; converting its GGUF takes a slow minute),
# with 4 new tokens per rewrite (random weights rarely stop early)
REWRITE_GENERATOR_KEY = "model.init_args.backend.init_args.generator"
REWRITE_MAX_NEW_TOKENS = {"model.init_args.backend.init_args.max_new_tokens": 4}
# CSI (python -m experiments.csi, ExCae's prompt search, run before the predict that reads its best_prompt.txt): two
# rounds (the initial prompt and one proposal: the loop, the engineer and the acceptance rule all run) on two probe
# videos of the tiny training splits, written under the test's folder (the predict's prompt_file follows it)
CSI_SIZES = {"max_rounds": 2, "probe_videos": 2}
# CSI's evaluator BAAI/bge-m3 comes from the hub: the offline all-MiniLM-L6-v2 (same SentenceEmbedder class) instead
CSI_EVALUATOR_PATH = {"evaluator.init_args.path": None}
# OpenAICompatible: the loopback server of tests/caption_helpers.py instead of api.openai.com (no network), and a
# test key variable, so no real OPENAI_API_KEY is needed or ever sent
API_BASE_URL_KEY = "model.init_args.backend.init_args.base_url"
API_KEY_ENV = {"model.init_args.backend.init_args.api_key_env": "VTR_SMOKE_TEST_API_KEY"}


def _cli_value(value: Any) -> str:
    return "null" if value is None else json.dumps(value) if isinstance(value, dict | list | bool) else str(value)


def flags(values: dict[str, Any]) -> list[str]:
    return [f"--{key}={_cli_value(value)}" for key, value in values.items()]


def class_name(spec: dict[str, Any]) -> str:
    return str(spec["class_path"]).rsplit(".", 1)[-1]


def uniform_indices(length: int, count: int) -> list[int]:
    """Centres of ``count`` equal segments of a ``length``-frame clip (every frame of a shorter clip)."""
    if length <= count:
        return list(range(length))
    return [int((2 * k + 1) * length // (2 * count)) for k in range(count)]


class _SmokeAPI(FakeOpenAIAPI):
    requests: ClassVar[list[dict[str, Any]]] = []  # this session's server only


class ShippedRunner:
    """Generated data, tiny stand-ins and the runs of header commands, shared by the whole session."""

    def __init__(self, base: Path, api_base_url: str) -> None:
        self.base = base
        self.api_base_url = api_base_url
        self.roots: dict[str, Path] = {}  # data class -> the data root handed to the config
        self.counts: dict[str, dict[str, dict[str, int]]] = {}  # fake MSVD/VATEX/DiDeMo: split -> true counts
        self.stores: dict[tuple[str, ...], Path] = {}  # predict command -> the store it wrote
        self.csi_outputs: dict[str, Path] = {}  # a CSI config's shipped `out` -> where the test's run wrote it
        self._llava: Path | None = None
        self._llama: Path | None = None
        self._runs = 0
        tiny = json.loads(TINY_CLIP_CONFIG.read_text())
        self.tiny_clip_context = int(tiny["text_cfg"]["context_length"])
        self.tiny_clip_image_size = int(tiny["vision_cfg"]["image_size"])

    # -------------------------------------------------------------- data
    def data_root(self, data_class: str) -> Path:
        if data_class not in self.roots:
            root = self.base / "data" / data_class.lower()
            if data_class == "MSRVTT":
                make_fake_msrvtt(root)
            elif data_class == "MSVD":
                self.counts[data_class] = make_fake_msvd(root)
            elif data_class == "VATEX":
                self.counts[data_class] = make_fake_vatex(root)
            elif data_class == "DiDeMo":
                self.counts[data_class] = make_fake_didemo(root)
            elif data_class == "SynthVTR":
                from datamodules import SynthVTR

                generator = SynthVTR(root=str(root), **SYNTH_SIZES)
                generator.generator_workers = 1
                generator.prepare_data()
            else:
                pytest.fail(f"no generated data for data class {data_class}: add it to ShippedRunner.data_root")
            self.roots[data_class] = root
        return self.roots[data_class]

    def all_video_ids(self, data_class: str, folder: Path) -> set[str]:
        """Every video id of the train, val and test splits, read from the generated annotation files."""
        if data_class in ("MSRVTT", "SynthVTR"):
            return {v["video_id"] for v in json.loads((folder / "MSRVTT_data.json").read_text())["videos"]}
        return {line.strip() for split in ("train", "val", "test")
                for line in (folder / f"{split}_list.txt").read_text().splitlines() if line.strip()}

    def true_test_counts(self, data_class: str, data_args: dict[str, Any], folder: Path) -> tuple[int, int]:
        """(texts, videos) of the test split under the configured protocol, from the generated files."""
        if data_class in self.counts:
            test = self.counts[data_class]["test"]
            return test["texts"], test["videos"]
        with (folder / data_args.get("test_csv", "MSRVTT_JSFUSION_test.csv")).open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        videos = {row["video_id"] for row in rows}
        if data_args.get("test_protocol", "jsfusion") == "jsfusion":
            return len(rows), len(videos)
        sentences = json.loads((folder / "MSRVTT_data.json").read_text())["sentences"]
        return sum(s["video_id"] in videos for s in sentences), len(videos)

    # -------------------------------------------------------------- commands
    def resolve(self, command: HeaderCommand) -> dict[str, Any]:
        """The composed config of a command, as ``--print_config`` shows it (parsing only, nothing runs)."""
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
            main([*command.args(), "--print_config"])
        assert exit_info.value.code == 0, f"{command} does not parse"
        return yaml.safe_load(out.getvalue())

    def overrides(self, command: HeaderCommand, config: dict[str, Any], out_dir: Path) -> list[str]:
        data_class = class_name(config["data"])
        values: dict[str, Any] = {"data.init_args.root": self.data_root(data_class),
                                  "data.init_args.num_workers": 0,
                                  "trainer.accelerator": "cpu", "trainer.devices": 1,
                                  "trainer.default_root_dir": out_dir}
        if data_class == "SynthVTR":
            values.update({f"data.init_args.{k}": v for k, v in SYNTH_SIZES.items()})
        if data_class == "MSRVTT":  # size: the held-out selection videos of the 12 fake training videos
            values["data.init_args.val_videos"] = 4
        logger = config["trainer"].get("logger")
        if isinstance(logger, list | dict):  # the shipped loggers, writing under out_dir
            entries = logger if isinstance(logger, list) else [logger]
            values["trainer.logger"] = [{**entry, "init_args": {**entry.get("init_args", {}), "save_dir": str(out_dir)}}
                                        for entry in entries]
        if command.subcommand == "fit":
            # the key the config fixes its batch with (the real configs state their paper's global batch; setting the
            # per-device one on top of it is refused)
            batch_key = "global_batch_size" if config["data"]["init_args"].get("global_batch_size") else "batch_size"
            values.update({f"data.init_args.{batch_key}": BATCH_SIZE, "trainer.max_epochs": 1,
                           "trainer.limit_train_batches": TRAIN_BATCHES})
            backbone = config["model"]["init_args"]["backbone"]
            if class_name(backbone) == "OpenCLIPBackbone":
                # the whole backbone (a JSON null on its own flag would arrive as the string 'None')
                tiny = {**backbone["init_args"], "model_name": "vtr-tiny-clip", "pretrained": None,
                        "max_words": min(int(backbone["init_args"]["max_words"]), self.tiny_clip_context)}
                values.update({"model.init_args.backbone": {**backbone, "init_args": tiny},
                               "data.init_args.image_size": self.tiny_clip_image_size})
            elif class_name(backbone) != "PretrainedTwoTower":  # its real weights install offline: kept
                pytest.fail(f"{command.source}: no tiny stand-in for backbone {backbone['class_path']}")
        if command.subcommand == "predict":
            prompt_file = config["model"]["init_args"].get("prompt_file")
            if prompt_file is not None:  # CSI's best prompt: the test's CSI run wrote it (run first, see csi())
                shipped_out = str(Path(prompt_file).parent)
                if shipped_out not in self.csi_outputs:
                    pytest.fail(f"{command.source}: prompt_file {prompt_file} is written by no CSI command of the "
                                "composed headers (python -m experiments.csi ... before this predict)")
                values["model.init_args.prompt_file"] = self.csi_outputs[shipped_out] / Path(prompt_file).name
            backend = class_name(config["model"]["init_args"]["backend"])
            if backend == "TransformersVLM":
                values.update({VLM_WEIGHTS_KEY: self.tiny_llava(), **VLM_MAX_NEW_TOKENS, **VLM_MIN_NEW_TOKENS})
            elif backend == "OpenAICompatible":
                values.update({API_BASE_URL_KEY: self.api_base_url, **API_KEY_ENV})
            elif backend == "TextRewrite":
                generator = {"class_path": "lightning_modules.captioning.backends.TransformersTextLM",
                             "init_args": {"model": str(self.tiny_llama()), "temperature": 0.0, "device": "cpu"}}
                values.update({REWRITE_GENERATOR_KEY: generator, **REWRITE_MAX_NEW_TOKENS})
            elif backend != "Simulated":
                pytest.fail(f"{command.source}: no test stand-in for caption backend {backend}")
        return flags(values)

    def tiny_llama(self) -> Path:
        if self._llama is None:
            self._llama = save_tiny_llama(self.base / "tiny-llama")
        return self._llama

    def tiny_llava(self) -> Path:
        if self._llava is None:
            self._llava = save_tiny_llava(self.base / "tiny-llava")
        return self._llava

    def run(self, command: HeaderCommand, out_dir: Path) -> tuple[Any, dict[str, Any]]:
        """Run a header command with the test's overrides; returns the CLI and the composed (shipped) config."""
        config = self.resolve(command)
        return main([*command.args(), *self.overrides(command, config, out_dir)]), config

    def csi_overrides(self, config: dict[str, Any], out_dir: Path) -> list[str]:
        data_class = class_name(config["data"])
        values: dict[str, Any] = {"data.init_args.root": self.data_root(data_class), "data.init_args.num_workers": 0,
                                  "out": out_dir, **CSI_SIZES}
        if data_class == "SynthVTR":
            values.update({f"data.init_args.{k}": v for k, v in SYNTH_SIZES.items()})
        if data_class == "MSRVTT":  # size: the held-out selection videos of the 12 fake training videos
            values["data.init_args.val_videos"] = 4
        if config["evaluator"]["init_args"].get("path") is not None:
            values.update(CSI_EVALUATOR_PATH)
        for role, key in (("captioner", "captioner"), ("engineer generator", "engineer.init_args.generator")):
            spec = config["captioner"] if role == "captioner" else config["engineer"]["init_args"].get("generator")
            if spec is None:
                continue  # the random-mutation engineer
            if class_name(spec) == "OpenAICompatible":
                values.update({f"{key}.init_args.base_url": self.api_base_url,
                               f"{key}.init_args.api_key_env": API_KEY_ENV[next(iter(API_KEY_ENV))]})
            elif class_name(spec) not in ("Simulated",):
                pytest.fail(f"{config}: no test stand-in for CSI {role} {spec['class_path']}")
        return flags(values)

    def csi(self, command: HeaderCommand) -> Path:
        """Run a ``python -m experiments.csi`` header command once per session; returns its output folder."""
        from experiments.csi.cli import cli as csi_cli

        args = command.args()[1:]
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
            csi_cli([*args, "--print_config"])
        assert exit_info.value.code == 0, f"{command} does not parse"
        config = yaml.safe_load(out.getvalue())
        if config["out"] not in self.csi_outputs:
            self._runs += 1
            out_dir = self.base / "csi" / f"run{self._runs}"
            summary = csi_cli([*args, *self.csi_overrides(config, out_dir)])
            assert (out_dir / "best_prompt.txt").read_text().strip() == summary["best_prompt"]
            assert summary["rounds"] == CSI_SIZES["max_rounds"] and summary["initial_score"] is not None
            self.csi_outputs[config["out"]] = out_dir
        return self.csi_outputs[config["out"]]

    def prerequisite(self, command: HeaderCommand) -> Path:
        return self.csi(command) if command.subcommand == "csi" else self.predict(command)

    def predict(self, command: HeaderCommand) -> Path:
        """Run a captioner's ``predict`` once per session; check and return its caption store."""
        key = tuple(command.args())
        if key not in self.stores:
            self._runs += 1
            cli, config = self.run(command, self.base / "predict" / f"run{self._runs}")
            (writer,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, CaptionWriter)]
            assert writer.output is not None
            self.check_store(writer.output, config, Path(cli.datamodule.root))
            self.stores[key] = writer.output
        return self.stores[key]

    def check_store(self, store: Path, config: dict[str, Any], folder: Path) -> None:
        """A record per video of every split, of the config's kind; narration at the uniformly sampled frames."""
        data_class, data_args = class_name(config["data"]), config["data"]["init_args"]
        assert data_args["predict_split"] == "all", "shipped captioner configs caption every video"
        records = read_store(store)
        assert sorted(r["video_id"] for r in records) == sorted(self.all_video_ids(data_class, folder)), store
        kind = config["model"]["init_args"]["kind"]
        frames = data_args.get("predict_num_frames") or data_args["num_frames"]
        for record in records:
            assert record["kind"] == kind and record["captions"] and all(c.strip() for c in record["captions"])
            assert {"prompt", "model", "created"} <= set(record)
            if kind == "narration":  # what the caption writer writes: the uniformly sampled frames
                assert record["frame_indices"] == uniform_indices(FAKE_VIDEO_FRAMES, frames), record
                assert len(record["captions"]) == len(record["frame_indices"])


@pytest.fixture(scope="session")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShippedRunner]:
    with serve_fake_api(_SmokeAPI) as base_url, pytest.MonkeyPatch.context() as env:
        env.setenv(API_KEY_ENV["model.init_args.backend.init_args.api_key_env"], "sk-smoke-test-not-a-key")
        yield ShippedRunner(tmp_path_factory.mktemp("shipped"), base_url)


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIGS).with_suffix(""))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=_id)
def test_experiment_config_trains_validates_and_tests(path: Path, runner: ShippedRunner, tmp_path: Path) -> None:
    command = run_command(path, "fit")
    for needed in prerequisites(command):
        runner.prerequisite(needed)
    cli, config = runner.run(command, tmp_path)
    trainer = cli.trainer
    assert trainer.global_step > 0, "no training step"
    run_dir = Path(trainer.log_dir)
    with (run_dir / "metrics.csv").open(newline="") as fh:
        logged = list(csv.DictReader(fh))
    assert any(row.get("val/t2v_R1") for row in logged), "validation did not run (no val/t2v_R1 logged)"
    record = json.loads((run_dir / "test" / "metrics.json").read_text())
    data_class, data_args = class_name(config["data"]), config["data"]["init_args"]
    texts, videos = runner.true_test_counts(data_class, data_args, Path(cli.datamodule.root))
    assert (record["num_texts"], record["num_videos"]) == (texts, videos)
    batch = record["data"]["train_batch"]  # one process: the global batch is the per-device one
    assert (batch["global_batch_size"], batch["per_device_batch_size"], batch["world_size"]) == \
        (BATCH_SIZE, BATCH_SIZE, 1)
    if config["trainer"].get("precision") is not None:  # as shipped (bf16-mixed runs on CPU too)
        assert str(trainer.precision) == str(config["trainer"]["precision"])


@pytest.mark.parametrize("path", CAPTIONERS, ids=_id)
def test_captioner_config_writes_a_record_per_video(path: Path, runner: ShippedRunner) -> None:
    store = runner.predict(run_command(path, "predict"))
    assert store.is_file() and os.path.getsize(store) > 0
