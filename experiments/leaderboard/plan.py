"""What the leaderboard runs: the SynthVTR configurations, the caption steps each method reads, and the cells
(method x seed x configuration), each as the command its shipped config documents.

Every command is the one the method's config header or README section gives, with only these additions: the
leaderboard's data root (``--data.init_args.root``, last, so the copy is the leaderboard's own), the configuration's
data config composed after the method config as the ``*_hard.yaml`` sweeps do, the seed, a CSV logger into the
leaderboard's run folder, the ``RunCosts`` callback that measures the cost columns, and the ``--data`` / ``--arg``
overrides a caller gives (tests: tiny sizes).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

ROOT = Path(__file__).resolve().parents[2]
SEEDS = (0, 1, 2)
COSTS_CALLBACK = '{"class_path": "callbacks.run_costs.RunCosts"}'
CARE_CONFIG = "configs/care_dpo/synthvtr.yaml"
CARE_SOURCES = "[zero_shot, sft, dgdpo]"   # the README's table command: the zero-shot comparison retriever too


class PlanError(ValueError):
    """A bad selection or setting; the message names it and what to do."""


@dataclass(frozen=True)
class Configuration:
    """A SynthVTR configuration: the data configs composed after each method config (``compose``) and the data
    sections that define its generated copy (``generator``, composed in order)."""

    name: str
    compose: tuple[str, ...]
    generator: tuple[str, ...]


CONFIGURATIONS: tuple[Configuration, ...] = (
    Configuration("default", (), ("configs/data/synthvtr.yaml",)),
    Configuration("hard", ("configs/data/synthvtr_hard.yaml",),
                  ("configs/data/synthvtr.yaml", "configs/data/synthvtr_hard.yaml")),
)


@dataclass(frozen=True)
class Step:
    """Captions (or a prompt search and captions) written once per configuration and read by every seed's cells.

    ``store`` is the caption store the step writes (relative to the data root), ``kind`` its caption kind, and
    ``simulated`` whether SynthVTR's simulated captioner (the generator's ground truth with hallucinations) wrote it.
    """

    name: str
    store: str
    kind: Literal["narration", "multi", "supplement"]
    simulated: bool
    what: str


STEPS: tuple[Step, ...] = (
    Step("narration", "captions/narration_h0.2.jsonl", "narration", True,
         "NarVid's per-frame narration (configs/captioners/synthvtr_narration.yaml)"),
    Step("multi_initial", "captions/multi_simulated.jsonl", "multi", True,
         "ExCae's K = 10 captions from its initial prompt (configs/captioners/synthvtr_multi.yaml)"),
    Step("csi", "captions/multi_csi.jsonl", "multi", True,
         "ExCae's prompt search (configs/csi/synthvtr.yaml), then K = 10 captions from its best prompt"),
    Step("supplement_a", "captions/supplement_a.jsonl", "supplement", True,
         "the conical method's supplements, prompt A (configs/captioners/synthvtr_supplement_a.yaml)"),
    Step("zero_shot", "captions/supplement_c.jsonl", "supplement", True,
         "CaRe-DPO's zero-shot captions (configs/captioners/synthvtr_supplement_c.yaml)"),
)
STEP_BY_NAME = {s.name: s for s in STEPS}


@dataclass(frozen=True)
class Method:
    """A leaderboard row: how its cell runs (``kind``: ``main.py fit`` of ``config`` plus ``args``, or the CaRe-DPO
    pipeline with ``headline``), the steps it reads (``needs``) and the caption store whose captions it reads at test
    time (``captions``, a step name; a CaRe-DPO DG-DPO cell's captions come from its own pipeline)."""

    name: str
    display: str
    kind: Literal["fit", "care"]
    config: str
    args: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    captions: str | None = None
    headline: str | None = None
    flagged_views: tuple[str, ...] = ()   # views shown only in a flagged column (conical: the paired view)


METHODS: tuple[Method, ...] = (
    Method("clip4clip_meanP", "CLIP4Clip meanP", "fit", "configs/quickstart.yaml",
           ("--model.init_args.sim_header=meanP",)),
    Method("clip4clip_seqTransf", "CLIP4Clip seqTransf", "fit", "configs/quickstart.yaml"),
    Method("narvid", "NarVid (simulated narration)", "fit", "configs/experiments/narvid_synthvtr.yaml",
           needs=("narration",), captions="narration"),
    Method("excae_csi", "ExCae (CSI-prompt captions)", "fit", "configs/experiments/excae_synthvtr.yaml",
           needs=("csi",), captions="csi"),
    Method("excae_initial", "ExCae (initial-prompt captions)", "fit", "configs/experiments/excae_synthvtr.yaml",
           ('--data.init_args.aux_captions={"multi": "captions/multi_simulated.jsonl"}',), needs=("multi_initial",),
           captions="multi_initial"),
    Method("conical", "Conical embedding optimisation (bare query)", "fit",
           "configs/experiments/conical_synthvtr.yaml", needs=("supplement_a",), captions="supplement_a",
           flagged_views=("paired",)),
    Method("care_dpo_dgdpo", "CaRe-DPO (DG-DPO captions)", "care", CARE_CONFIG, needs=("zero_shot",),
           headline="dgdpo-role"),
    Method("care_dpo_zero_shot", "CaRe-DPO retriever (zero-shot captions)", "care", CARE_CONFIG,
           needs=("zero_shot",), captions="zero_shot", headline="zero_shot-role"),
)
METHOD_BY_NAME = {m.name: m for m in METHODS}
REFERENCE = "clip4clip_seqTransf"   # ΔR@1 is against this method
CONFIGURATION_BY_NAME = {c.name: c for c in CONFIGURATIONS}

# the CaRe-DPO pipeline stages behind each headline retriever (summary.json timings_s): the captions it reads and
# its own training; the other retrievers of the same pipeline run are not its cost
CARE_CAPTION_STAGES = {"dgdpo-role": ("sft", "captions_sft", "retriever_sft_role", "sample", "score", "dgdpo",
                                      "captions_dgdpo"),
                       "zero_shot-role": ()}
CARE_RETRIEVER_STAGE = {"dgdpo-role": "retriever_dgdpo_role", "zero_shot-role": "retriever_zero_shot_role"}


@dataclass(frozen=True)
class Cell:
    configuration: Configuration
    method: Method
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method.name}_s{self.seed}"

    @property
    def key(self) -> str:
        return f"{self.configuration.name}/{self.name}"


@dataclass
class Settings:
    """Where the leaderboard works and what the caller overrides.

    ``data``: ``KEY=VALUE`` data-module arguments for every command that reads SynthVTR (tests: tiny sizes);
    ``args``: arguments appended to every ``main.py fit`` cell and every CaRe-DPO training stage (``--trainer.*``);
    ``csi_args``: arguments of ExCae's prompt search (``--probe_videos``, ``--max_rounds``); ``care_args``: arguments
    of the CaRe-DPO pipeline command (``--sampling.num_samples``).
    """

    work: Path
    data: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    csi_args: list[str] = field(default_factory=list)
    care_args: list[str] = field(default_factory=list)
    python: str = sys.executable

    def __post_init__(self) -> None:
        self.work = Path(self.work).resolve()
        for item in self.data:
            key, sep, _ = item.partition("=")
            if not sep or not key or key.startswith("-") or key == "root":
                raise PlanError(f"--data {item!r}: expected KEY=VALUE of a SynthVTR argument, e.g. --data "
                                "num_families=4 (the data root is the leaderboard's own: <work>/data)")

    @property
    def data_root(self) -> Path:
        return self.work / "data"

    def steps_dir(self, conf: Configuration) -> Path:
        return self.work / conf.name / "steps"

    def runs_dir(self, conf: Configuration) -> Path:
        return self.work / conf.name / "runs"

    def registry(self, conf: Configuration) -> Path:
        return self.work / "registry" / conf.name

    def data_args(self, prefix: str = "data.init_args") -> list[str]:
        """The ``--data`` overrides, then the data root: last, so a composed data config cannot move it."""
        return [*(f"--{prefix}.{item}" for item in self.data), f"--{prefix}.root={self.data_root}"]


def data_pairs(items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` items as a dict, each value read as YAML (``4`` -> 4, ``false`` -> False)."""
    return {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in items)}


# ---------------------------------------------------------------- selection
def cells(configurations: list[str] | None = None, methods: list[str] | None = None,
          seeds: list[int] | None = None) -> list[Cell]:
    """Every cell of the grid in run order (configuration, method, seed), filtered; an unknown name is an error."""
    for name in configurations or []:
        if name not in CONFIGURATION_BY_NAME:
            raise PlanError(f"configuration {name!r}: unknown; choose from {', '.join(CONFIGURATION_BY_NAME)}")
    for name in methods or []:
        if name not in METHOD_BY_NAME:
            raise PlanError(f"method {name!r}: unknown; choose from {', '.join(METHOD_BY_NAME)}")
    for seed in seeds or []:
        if seed not in SEEDS:
            raise PlanError(f"seed {seed}: the leaderboard's seeds are {', '.join(map(str, SEEDS))}")
    return [Cell(conf, method, seed) for conf in CONFIGURATIONS for method in METHODS for seed in SEEDS
            if (not configurations or conf.name in configurations) and (not methods or method.name in methods)
            and (not seeds or seed in seeds)]


def parse_only(only: list[str]) -> tuple[list[str], list[str], list[int]]:
    """``--only KEY=V1,V2`` filters (keys: configuration, method, seed; repeated keys add values) as lists."""
    found: dict[str, list[str]] = {"configuration": [], "method": [], "seed": []}
    for item in only:
        key, sep, values = item.partition("=")
        if not sep or key not in found or not values:
            raise PlanError(f"--only {item!r}: expected configuration=..., method=... or seed=... (comma-separated "
                            "values), e.g. --only method=narvid,conical --only seed=0")
        found[key] += [v.strip() for v in values.split(",") if v.strip()]
    try:
        seeds = [int(s) for s in found["seed"]]
    except ValueError as err:
        raise PlanError(f"--only seed=...: seeds are whole numbers ({err})") from err
    return found["configuration"], found["method"], seeds


def needed_steps(selected: list[Cell]) -> list[tuple[Configuration, Step]]:
    out: list[tuple[Configuration, Step]] = []
    for conf in CONFIGURATIONS:
        names = {n for c in selected if c.configuration == conf for n in c.method.needs}
        out += [(conf, step) for step in STEPS if step.name in names]
    return out


# ---------------------------------------------------------------- commands
def _compose(conf: Configuration) -> list[str]:
    return [arg for path in conf.compose for arg in ("--config", path)]


def _predict(settings: Settings, conf: Configuration, step: Step, config: str, *extra: str) -> list[str]:
    return [settings.python, "main.py", "predict", "--config", config, *_compose(conf), *extra,
            f"--trainer.default_root_dir={settings.steps_dir(conf) / step.name}", *settings.data_args()]


def step_commands(settings: Settings, conf: Configuration, step: Step) -> list[list[str]]:
    """The step's commands, in order (the prompt search first for ``csi``)."""
    captioners = "configs/captioners"
    if step.name == "narration":
        return [_predict(settings, conf, step, f"{captioners}/synthvtr_narration.yaml")]
    if step.name == "multi_initial":
        return [_predict(settings, conf, step, f"{captioners}/synthvtr_multi.yaml")]
    if step.name == "supplement_a":
        return [_predict(settings, conf, step, f"{captioners}/synthvtr_supplement_a.yaml")]
    if step.name == "zero_shot":
        return [_predict(settings, conf, step, f"{captioners}/synthvtr_supplement_c.yaml")]
    if step.name == "csi":
        out = settings.steps_dir(conf) / "csi" / "search"
        search = [settings.python, "-m", "experiments.csi", "--config", "configs/csi/synthvtr.yaml", *_compose(conf),
                  f"--out={out}", *settings.csi_args, *settings.data_args()]
        captions = _predict(settings, conf, step, f"{captioners}/synthvtr_multi.yaml",
                            f"--model.init_args.prompt_file={out / 'best_prompt.txt'}",
                            f"--trainer.callbacks.init_args.output={step.store}")
        return [search, captions]
    raise PlanError(f"step {step.name!r}: no command")  # a STEPS entry without one is a bug here


def logger_arg(save_dir: Path, name: str) -> str:
    return "--trainer.logger=" + json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                              "init_args": {"save_dir": str(save_dir), "name": name}}])


def care_work(settings: Settings, conf: Configuration) -> Path:
    """The CaRe-DPO pipeline's work folder of a configuration: both CaRe-DPO cells of a seed share its stages."""
    return settings.work / conf.name / "care_dpo"


def care_overrides(settings: Settings) -> dict[str, list[str]]:
    """The shipped pipeline config's stage overrides, then the leaderboard's: the data root for every stage that
    reads data (sampling and scoring read the retriever's), the cost callback for the three trainings, ``args``."""
    shipped = yaml.safe_load((ROOT / CARE_CONFIG).read_text()).get("overrides") or {}
    costs = f"--trainer.callbacks+={COSTS_CALLBACK}"
    ours = {"sft": [*settings.data_args(), costs, *settings.args],
            "dgdpo": [*settings.data_args("data.init_args.videos.init_args"), costs, *settings.args],
            "caption": settings.data_args(),
            "retriever": [*settings.data_args(), costs, *settings.args]}
    return {kind: [*shipped.get(kind, []), *ours.get(kind, [])] for kind in (*shipped, *(k for k in ours
                                                                                       if k not in shipped))}


def cell_command(settings: Settings, cell: Cell) -> list[str]:
    """The command that trains and tests one cell (its run folder: ``runs_dir/<cell>/version_0``)."""
    conf, method = cell.configuration, cell.method
    if method.kind == "fit":
        logger = logger_arg(settings.runs_dir(conf), cell.name)
        return [settings.python, "main.py", "fit", "--config", method.config, *_compose(conf), *method.args,
                f"--seed_everything={cell.seed}", logger, f"--trainer.callbacks+={COSTS_CALLBACK}", *settings.args,
                *settings.data_args()]
    # CaRe-DPO: the pipeline from its shipped config with the README's comparison sources; the hard configuration
    # composes its data config after every stage config that carries data (DG-DPO wraps the SFT stage's data)
    cmd = [settings.python, "-m", "experiments.care_dpo", "--config", method.config, f"--seed={cell.seed}",
           f"--sources={CARE_SOURCES}", f"--headline={method.headline}", f"--work={care_work(settings, conf)}"]
    if conf.compose:
        shipped = yaml.safe_load((ROOT / method.config).read_text())
        for key in ("sft_config", "caption_config", "retriever_config"):
            paths = shipped[key] if isinstance(shipped[key], list) else [shipped[key]]
            cmd.append(f"--{key}={json.dumps([*paths, *conf.compose])}")
        cmd.append(f"--data_config={json.dumps([shipped['sft_config'], *conf.compose])}")
    # its summary.json into the cell's run folder (--out; not the sweep runner's --trainer.logger, which the pipeline's
    # command line receives as an instantiated logger and cannot read)
    cmd += [f"--overrides={json.dumps(care_overrides(settings))}", *settings.care_args,
            f"--out={settings.runs_dir(conf) / cell.name / 'version_0'}"]
    return cmd
