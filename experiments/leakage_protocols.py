"""Every protocol each method can run under, run whole and tiny through the real CLI, with its computed leakage verdict.

    python -m experiments.leakage_protocols --out results/leakage/protocols.json [--work DIR]

Each protocol runs the commands a user runs (captions ``predict``, ``python -m experiments.csi``, ``fit`` and the
test of the best checkpoint that ends it) in this process, with the shipped configs (the SynthVTR ones; CLIP4Clip's
MSR-VTT composition for MSR-VTT's selection switch) on generated data (``experiments/tiny_inputs.py``: the tiny
SynthVTR, the fake MSR-VTT), and records the verdict its ``metrics.json`` (or ``metrics_<flag>.json``) computed from
its lineage: ``verdict_text`` of the run's ``leakage`` and ``leakage_unverified``, exactly as computed, beside both
lists. Nothing here types a verdict; the README's "Leakage" table is generated from the file this writes.

Overrides are sizes only (the constants below, each with its reason), plus where the runs write, a quiet trainer, the
CPU, and the tiny stand-ins for weights that are not on this machine (named constants with their reasons). A protocol
that switches something says so in ``settings``; what each row ran is in its ``commands`` (``<work>`` is the work
folder: ``--work``, or a temporary folder deleted at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from datamodules.atomic import write_json_atomic

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
COMMAND = "python -m experiments.leakage_protocols --out results/leakage/protocols.json"

# ------------------------------------------------------------------------------------------ sizes
EPOCHS = 1  # one epoch: a fit still trains, selects its best checkpoint on the validation split and tests it
SYNTH_BATCH = 4  # the tiny SynthVTR's training split is 2 families of 2 videos
MSRVTT_GLOBAL_BATCH = 4  # the shipped 128 (CLIP4Clip's) would exceed the fake MSR-VTT's 8 training videos
MSRVTT_VAL_VIDEOS = 4  # the shipped default's held-out selection videos at the fake data's size (2 YouTube parents)
CSI_SIZES = {"max_rounds": 2, "probe_videos": 2}  # the initial prompt and one proposal, on 2 of the 4 training videos

# ------------------------------------------------------------------------------------------ named stand-ins
# OpenAI CLIP ViT-B/32 comes from the hub: the tiny random open_clip twin of the same class (OpenCLIPBackbone), at its
# image size; the PretrainedTwoTower of the SynthVTR configs keeps its real offline weights
TINY_CLIP = {"class_path": "OpenCLIPBackbone", "init_args": {"model_name": "vtr-tiny-clip", "pretrained": None,
                                                              "max_words": 32}}
TINY_CLIP_IMAGE_SIZE = 64
# the text rewrite's SmolLM2-135M-Instruct (its GGUF converts in a slow minute): a tiny random Llama through
# TransformersTextLM, 4 new tokens per rewrite (random weights rarely stop early); the rewrite still fills {text}
REWRITE_MAX_NEW_TOKENS = 4
# CaRe-DPO's captioner LM (SmolLM2-135M-Instruct) likewise: the tiny random Llama, all of its 2 layers trained (the
# shipped lm_layers 6 exceeds them); sampling: 2 captions of at most 6 tokens per video, 3 videos per call
CARE_LM_LAYERS = 2
CARE_SAMPLING = {"num_samples": 2, "max_new_tokens": 6, "batch_size": 3}
CARE_BATCH = 2  # the captioner's and the retriever's batch: the tiny training split has 4 videos
# the SFT and DG-DPO configs validate (and so select a checkpoint) every few epochs; with one epoch, every epoch
CARE_VAL_EVERY = 1
# where the runs write (W&B off for CSI, whose shipped project would log offline runs into the work folder)
CSI_NO_WANDB = {"wandb_project": None}

# Methods with a shipped experiment config (configs/experiments/<method>_*.yaml) whose rows are not produced here yet,
# and why; tests/experiments/test_leakage_protocols.py checks that every method has rows or a reason here.
PENDING: dict[str, str] = {}
# the configs/experiments/<prefix>_*.yaml family of each method's rows
METHOD_PREFIX = {"CLIP4Clip": "clip4clip", "NarVid": "narvid", "ExCae": "excae", "Conical": "conical",
                 "CaRe-DPO": "care_dpo"}


class ProtocolError(RuntimeError):
    """A protocol's run did not leave what the table needs; the message names the file."""


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict | list | bool):
        return json.dumps(value)
    return str(value)


def flags(values: dict[str, Any]) -> list[str]:
    return [f"--{key}={_value(value)}" for key, value in values.items()]


@dataclass
class Result:
    """What a protocol left: the metrics record carrying the verdict, and every command that fed it, in order."""

    record: Path
    commands: list[str]


class Runner:
    """Generated data, caption stores and CSI runs shared by the protocols that need the same ones."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self._msrvtt: Path | None = None
        self._synth: Path | None = None
        self._llama: Path | None = None
        self._done: dict[tuple[str, ...], tuple[Any, list[str]]] = {}  # a step's arguments -> its output, commands
        self._runs = 0

    # -------------------------------------------------------------- data and stand-ins
    def msrvtt(self) -> Path:
        if self._msrvtt is None:
            from experiments.tiny_inputs import make_fake_msrvtt

            self._msrvtt = make_fake_msrvtt(self.work / "msrvtt")
        return self._msrvtt

    def synth(self) -> Path:
        """The folder handed to SynthVTR as ``root`` (the dataset is generated below it once)."""
        if self._synth is None:
            from experiments.tiny_inputs import tiny_synth

            tiny_synth(self.work / "synth")
            self._synth = self.work / "synth"
        return self._synth

    def tiny_llama(self) -> Path:
        if self._llama is None:
            import torch

            from experiments.tiny_inputs import save_tiny_llama

            torch.manual_seed(0)  # the same random weights (and so the same rewrites) whichever rows ran before
            self._llama = save_tiny_llama(self.work / "tiny-llama")
        return self._llama

    def synth_sizes(self, captioning: bool) -> dict[str, Any]:
        """The tiny SynthVTR's generator and loader sizes (a captioner config also gets its predict sizes)."""
        from experiments.tiny_inputs import TINY_SYNTH

        keep = {k: v for k, v in TINY_SYNTH.items() if captioning or not k.startswith(("predict", "video_dir"))}
        return {**{f"data.init_args.{k}": v for k, v in keep.items()}, "data.init_args.root": self.synth()}

    # -------------------------------------------------------------- commands
    def shown(self, program: str, args: list[str]) -> str:
        """The command line as run, with the work folder as ``<work>`` and repository paths relative."""
        text = shlex.join([*program.split(), *args])
        return text.replace(str(self.work), "<work>").replace(f"{REPO}/", "")

    def run_main(self, args: list[str]) -> tuple[Any, str]:
        from vtr.lightning_cli import main

        return main(args), self.shown("python main.py", args)

    def quiet(self, out: Path) -> dict[str, Any]:
        """Where a run writes, on the CPU, without progress bars."""
        return {"trainer.accelerator": "cpu", "trainer.devices": 1, "trainer.enable_progress_bar": False,
                "trainer.enable_model_summary": False, "trainer.default_root_dir": out}

    def predict(self, config: str, output: str, extra: dict[str, Any] | None = None,
                after: list[str] | None = None) -> tuple[Path, list[str]]:
        """Run a captioner config's ``predict`` once, writing ``output`` (relative to the dataset root); returns the
        store and the commands that made it (``after``: the commands it read the output of)."""
        key = ("predict", config, output, json.dumps(extra or {}, sort_keys=True, default=str))
        if key not in self._done:
            self._runs += 1
            values = {**self.synth_sizes(captioning=True), **self.quiet(self.work / "runs" / f"predict{self._runs}"),
                      "trainer.callbacks.init_args.output": output, **(extra or {})}
            cli, shown = self.run_main(["predict", "--config", str(CONFIGS / config), *flags(values)])
            store = Path(cli.datamodule.root) / output
            if not store.is_file():
                raise ProtocolError(f"{config}: predict wrote no caption store at {store}")
            self._done[key] = (store, [*(after or []), shown])
        store, commands = self._done[key]
        return store, list(commands)

    def csi(self) -> tuple[Path, list[str]]:
        """ExCae's caption self-improvement (configs/csi/synthvtr.yaml); returns its best_prompt.txt."""
        key = ("csi",)
        if key not in self._done:
            from experiments.csi.cli import cli as csi_cli

            out = self.work / "runs" / "csi"
            values = {**self.synth_sizes(captioning=False), "out": out, **CSI_SIZES, **CSI_NO_WANDB}
            args = ["--config", str(CONFIGS / "csi" / "synthvtr.yaml"), *flags(values)]
            csi_cli(args)
            best = out / "best_prompt.txt"
            if not best.is_file():
                raise ProtocolError(f"CSI wrote no {best}")
            self._done[key] = (best, [self.shown("python -m experiments.csi", args)])
        best, commands = self._done[key]
        return best, list(commands)

    def fit(self, configs: list[str], name: str, values: dict[str, Any], record: str = "metrics.json",
            before: list[str] | None = None) -> Result:
        """``fit`` (ending with the test of the best checkpoint) of ``configs`` composed in order; the test record
        ``record`` (``metrics.json`` or a post-processing flag's ``metrics_<flag>.json``)."""
        out = self.work / "runs"
        logger = [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(out),
                                                                                       "name": name}}]
        args = ["fit"]
        for config in configs:
            args += ["--config", str(CONFIGS / config)]
        args += flags({**values, "trainer.max_epochs": EPOCHS, **self.quiet(out / name), "trainer.logger": logger})
        cli, shown = self.run_main(args)
        path = Path(cli.trainer.log_dir) / "test" / record
        if not path.is_file():
            raise ProtocolError(f"{name}: the test of the best checkpoint wrote no {path}")
        return Result(path, [*(before or []), shown])

    # -------------------------------------------------------------- the methods' pipelines
    def clip4clip(self, name: str, values: dict[str, Any], record: str = "metrics.json") -> Result:
        """CLIP4Clip on the fake MSR-VTT, composed as configs/experiments/clip4clip_msrvtt.yaml's header says."""
        sizes = {"data.init_args.root": self.msrvtt(), "data.init_args.val_videos": MSRVTT_VAL_VIDEOS,
                 "data.init_args.global_batch_size": MSRVTT_GLOBAL_BATCH, "data.init_args.num_workers": 0,
                 "data.init_args.image_size": TINY_CLIP_IMAGE_SIZE, "model.init_args.backbone": TINY_CLIP}
        composition = ["base/trainer.yaml", "data/msrvtt.yaml", "model/clip4clip.yaml",
                       "experiments/clip4clip_msrvtt.yaml"]
        return self.fit(composition, name, {**sizes, **values}, record)

    def synth_fit(self, experiment: str, name: str, values: dict[str, Any], before: list[str]) -> Result:
        """A SynthVTR experiment config on the tiny SynthVTR."""
        sizes = {**self.synth_sizes(captioning=False), "data.init_args.batch_size": SYNTH_BATCH}
        return self.fit([f"experiments/{experiment}"], name, {**sizes, **values}, before=before)

    def narvid(self) -> Result:
        _, made = self.predict("captioners/synthvtr_narration.yaml", "captions/narration_h0.2.jsonl")
        return self.synth_fit("narvid_synthvtr.yaml", "narvid", {}, made)

    def excae(self, use_csi: bool) -> Result:
        if use_csi:  # the header's steps 1-3: CSI, captions from its best prompt, training on them
            best, before = self.csi()
            store, made = self.predict("captioners/synthvtr_multi.yaml", "captions/multi_csi.jsonl",
                                       {"model.init_args.prompt_file": best}, after=before)
        else:  # the header's variant without CSI: ExCae's initial prompt
            store, made = self.predict("captioners/synthvtr_multi.yaml", "captions/multi_simulated.jsonl")
        name = "excae_csi" if use_csi else "excae_initial_prompt"
        return self.synth_fit("excae_synthvtr.yaml", name,
                              {"data.init_args.aux_captions": {"multi": f"captions/{store.name}"}}, made)

    def supplements(self, prompt: str) -> tuple[str, list[str]]:
        """The supplement store of a prompt (``a``, ``a_any``, ``b``, ``c``, ``rewrite``) and the commands making it."""
        if prompt == "a_any":  # prompt A with {text} from any split, the slides' wording taken literally
            store, made = self.predict("captioners/synthvtr_supplement_a.yaml", "captions/supplement_a_any.jsonl",
                                       {"model.init_args.text_context": "any"})
        elif prompt == "rewrite":
            generator = {"class_path": "lightning_modules.captioning.backends.TransformersTextLM",
                         "init_args": {"model": str(self.tiny_llama()), "temperature": 0.0, "device": "cpu"}}
            store, made = self.predict("captioners/synthvtr_rewrite_smollm2.yaml", "captions/rewrite.jsonl",
                                       {"model.init_args.backend.init_args.generator": generator,
                                        "model.init_args.backend.init_args.max_new_tokens": REWRITE_MAX_NEW_TOKENS})
        else:
            store, made = self.predict(f"captioners/synthvtr_supplement_{prompt}.yaml",
                                       f"captions/supplement_{prompt}.jsonl")
        return f"captions/{store.name}", made

    def care_dpo(self, retriever: str) -> Result:
        """CaRe-DPO's whole pipeline (``python -m experiments.care_dpo --config configs/care_dpo/synthvtr.yaml``, run
        once: SFT -> captions -> scorer -> sample -> score -> DG-DPO -> captions -> retriever); the test record of
        its ``retriever`` (``dgdpo-role``: the headline; ``sft-role``: the scorer)."""
        key = ("care_dpo",)
        if key not in self._done:
            import yaml
            from jsonargparse import CLI

            from experiments.care_dpo.cli import run as care_run

            # the header's zero-shot captions, once: the retriever config's own data section reads them (the summary's
            # caption measures load that data module), whatever caption sources the pipeline trains on
            _, before = self.predict("captioners/synthvtr_supplement_c.yaml", "captions/supplement_c.jsonl")
            config = CONFIGS / "care_dpo" / "synthvtr.yaml"
            shipped = yaml.safe_load(config.read_text())
            data = self.synth_sizes(captioning=True)
            fit_data = self.synth_sizes(captioning=False)
            lm = {"model.init_args.captioner.init_args.lm": self.tiny_llama(),
                  "model.init_args.captioner.init_args.lm_layers": CARE_LM_LAYERS}
            quiet = {"trainer.enable_progress_bar": False, "trainer.enable_model_summary": False}
            train = {"data.init_args.batch_size": CARE_BATCH, "trainer.max_epochs": EPOCHS, **quiet}
            sizes = {
                "sft": flags({**fit_data, **lm, **train, "trainer.check_val_every_n_epoch": CARE_VAL_EVERY}),
                # DG-DPO's PreferenceDataModule wraps the videos' data module
                "dgdpo": flags({**{k.replace("data.init_args.", "data.init_args.videos.init_args."): v
                                   for k, v in fit_data.items()},
                                **lm, **train, "trainer.check_val_every_n_epoch": CARE_VAL_EVERY}),
                "caption": flags({**data, **quiet}),
                "retriever": flags({**fit_data, **train}),
                "sample": flags(quiet),  # sampling and scoring read the retriever's data (its sizes above)
                "score": flags(quiet)}
            # the shipped stage arguments stay, the sizes follow them
            overrides = {kind: [*(shipped.get("overrides") or {}).get(kind, []), *sizes.get(kind, [])]
                         for kind in {*(shipped.get("overrides") or {}), *sizes}}
            args = ["--config", str(config), *flags({"work": self.work / "runs" / "care_dpo" / "work",
                                                      "out": self.work / "runs" / "care_dpo" / "out",
                                                      "overrides": dict(sorted(overrides.items()))}),
                    *flags({f"sampling.{k}": v for k, v in CARE_SAMPLING.items()})]
            summary = CLI(care_run, as_positional=False, args=args)  # what `python -m experiments.care_dpo` runs
            self._done[key] = (summary, [*before, self.shown("python -m experiments.care_dpo", args)])
        summary, commands = self._done[key]
        found = summary["retrieval"].get(retriever)
        if found is None:
            raise ProtocolError(f"CaRe-DPO's pipeline trained no {retriever!r} retriever "
                                f"({sorted(summary['retrieval'])})")
        return Result(Path(found["path"]), list(commands))

    def conical(self, name: str, prompt: str, test_supplement: str) -> Result:
        store, made = self.supplements(prompt)
        values = {"data.init_args.aux_captions": {"supplement": store},
                  "model.init_args.test_supplement": test_supplement}
        return self.synth_fit("conical_synthvtr.yaml", name, values, made)


@dataclass(frozen=True)
class Protocol:
    method: str
    name: str
    settings: str  # the switches that define it (everything else as shipped)
    run: Callable[[Runner], Result]


PROTOCOLS: list[Protocol] = [
    Protocol("CLIP4Clip", "MSR-VTT default selection",
             "clip4clip_msrvtt.yaml as shipped: `val_protocol: heldout` (selection on held-out training videos)",
             lambda r: r.clip4clip("clip4clip_heldout", {})),
    Protocol("CLIP4Clip", "selection on the test split (CLIP4Clip's / NarVid's released code)",
             "`val_protocol: test`",
             lambda r: r.clip4clip("clip4clip_select_on_test", {"data.init_args.val_protocol": "test"})),
    Protocol("CLIP4Clip", "QB-Norm (metrics_qbnorm.json)", "`postprocess: [qbnorm]` (bank of training texts)",
             lambda r: r.clip4clip("clip4clip_qbnorm", {"model.init_args.postprocess": ["qbnorm"]},
                                   "metrics_qbnorm.json")),
    Protocol("CLIP4Clip", "DSL (metrics_dsl.json)", "`postprocess: [dsl]` (transductive over the test queries)",
             lambda r: r.clip4clip("clip4clip_dsl", {"model.init_args.postprocess": ["dsl"]}, "metrics_dsl.json")),
    Protocol("NarVid", "simulated narration (each frame captioned alone)",
             "synthvtr_narration.yaml -> narvid_synthvtr.yaml as shipped", lambda r: r.narvid()),
    Protocol("ExCae", "CSI -> captions from best_prompt.txt -> ECS",
             "csi/synthvtr.yaml (probe = training split) -> synthvtr_multi.yaml `prompt_file: best_prompt.txt` -> "
             "excae_synthvtr.yaml", lambda r: r.excae(use_csi=True)),
    Protocol("ExCae", "ExCae's initial prompt (no CSI)",
             "synthvtr_multi.yaml as shipped -> excae_synthvtr.yaml `aux_captions: {multi: multi_simulated.jsonl}`",
             lambda r: r.excae(use_csi=False)),
    Protocol("Conical", "bare query reported (`test_supplement: none`)",
             "supplement_a.yaml -> conical_synthvtr.yaml as shipped (`report_supplements: [paired, none]`)",
             lambda r: r.conical("conical_none_a", "a", "none")),
    Protocol("Conical", "per_candidate, prompt A, `text_context: training`",
             "supplement_a.yaml as shipped (`text_context: training`, validation/test videos get prompt B); "
             "`test_supplement: per_candidate`", lambda r: r.conical("conical_per_candidate_a", "a", "per_candidate")),
    Protocol("Conical", "per_candidate, prompt A, `text_context: any`",
             "supplement_a.yaml `text_context: any` ({text} = the video's first text, test queries included); "
             "`test_supplement: per_candidate`",
             lambda r: r.conical("conical_per_candidate_a_any", "a_any", "per_candidate")),
    Protocol("Conical", "per_candidate, prompt B", "supplement_b.yaml (no {text}); `test_supplement: per_candidate`",
             lambda r: r.conical("conical_per_candidate_b", "b", "per_candidate")),
    Protocol("Conical", "per_candidate, prompt C", "supplement_c.yaml (no {text}); `test_supplement: per_candidate`",
             lambda r: r.conical("conical_per_candidate_c", "c", "per_candidate")),
    Protocol("Conical", "per_candidate, text-only rewrite",
             "rewrite_smollm2.yaml as shipped (`text_context: any`; a tiny random Llama for SmolLM2); "
             "`test_supplement: per_candidate`",
             lambda r: r.conical("conical_per_candidate_rewrite", "rewrite", "per_candidate")),
    Protocol("Conical", "paired (reported)", "supplement_a.yaml as shipped; `test_supplement: paired`",
             lambda r: r.conical("conical_paired_a", "a", "paired")),
    Protocol("CaRe-DPO", "retriever on the DG-DPO captions (the headline)",
             "care_dpo/synthvtr.yaml as shipped (a tiny random Llama for SmolLM2): SFT -> captions -> scorer -> "
             "sample -> score -> DG-DPO -> captions -> retriever `dgdpo-role`",
             lambda r: r.care_dpo("dgdpo-role")),
    Protocol("CaRe-DPO", "retriever on the SFT captions (the preference scorer)",
             "the same run's `sft-role` retriever, which labels the preference pairs",
             lambda r: r.care_dpo("sft-role")),
]
# every conical row keeps the shipped `text_fusion: concat`: per_candidate costs a text-encoder pass per (query,
# video) pair, 10 x 2 on the tiny SynthVTR's test split


def row(protocol: Protocol, result: Result) -> dict[str, Any]:
    """One table row: the verdict recomputed as text from the record's computed lists, both lists beside it."""
    from datamodules.lineage import verdict_text

    record = json.loads(result.record.read_text())
    for key in ("lineage", "leakage", "leakage_unverified"):
        if key not in record:
            raise ProtocolError(f"{result.record}: no {key!r}; the run did not record its lineage")
    leaks, unverified = list(record["leakage"]), list(record["leakage_unverified"])
    return {"method": protocol.method, "protocol": protocol.name, "settings": protocol.settings,
            "verdict": verdict_text(leaks, unverified), "leaks": len(leaks),
            # a leak scoped to a view ("view paired/* only: ...") does not touch the reported number
            "leaks_reported": sum(not leak.startswith("view ") for leak in leaks),
            "leakage": leaks, "leakage_unverified": unverified, "record": result.record.name,
            "commands": result.commands}


def _commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha or 'unknown'}{' (uncommitted changes)' if dirty else ''}"


def run(work: Path, only: list[str] | None = None) -> dict[str, Any]:
    """Run every protocol (or those whose method is in ``only``) under ``work``; returns the table."""
    started = time.perf_counter()
    runner = Runner(work)
    rows = []
    for protocol in PROTOCOLS:
        if only and protocol.method not in only:
            continue
        print(f"[leakage_protocols] {protocol.method}: {protocol.name}", flush=True)
        rows.append(row(protocol, protocol.run(runner)))
    return {"command": COMMAND, "commit": _commit(), "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "data": "tiny SynthVTR (4 families of 2 videos: 1 test, 1 validation family) and fake MSR-VTT (12 "
                    "training videos, 4 held out for selection; 6 test videos)",
            "epochs": EPOCHS, "wall_s": round(time.perf_counter() - started, 1),
            **({"only": only} if only else {}),
            **({"not_yet_covered": "; ".join(f"{m}: {why}" for m, why in PENDING.items())} if PENDING else {}),
            "rows": rows}



def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the JSON table to write (results/leakage/protocols.json)")
    parser.add_argument("--work", default=None,
                        help="folder for the generated data and runs (kept); default: a temporary folder, deleted")
    parser.add_argument("--only", nargs="*", default=None, help="only these methods' rows (e.g. CLIP4Clip Conical)")
    args = parser.parse_args(argv)
    known = {p.method for p in PROTOCOLS}
    unknown = sorted(set(args.only or []) - known)
    if unknown:
        parser.error(f"--only: no protocols for {unknown}; the methods are {sorted(known)}")
    # offline: every weight comes from the installed packages; W&B loggers stay offline
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("WANDB_MODE", "offline"),
                       ("WANDB_SILENT", "true"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)
    if args.work is not None:
        work = Path(args.work).resolve()
        work.mkdir(parents=True, exist_ok=True)
        table = run(work, args.only)
    else:
        with tempfile.TemporaryDirectory(prefix="vtr-leakage-") as tmp:
            table = run(Path(tmp).resolve(), args.only)
    write_json_atomic(Path(args.out), table, indent=1, ensure_ascii=False)
    print(f"[leakage_protocols] {len(table['rows'])} protocols in {table['wall_s']} s -> {args.out}", flush=True)
    return table


if __name__ == "__main__":
    main()
