"""``vtr``: one command for the whole suite, from any directory (console script of ``pip install .``; in a
checkout also ``python -m vtr``).

``vtr fit|validate|test|predict ...`` is the LightningCLI (``vtr/lightning_cli.py``, ``python main.py`` in a checkout).
Every other subcommand runs a module's command line exactly as ``python -m <module>`` does (``runpy``), with the
arguments that follow it: ``vtr sweep X`` is ``python -m experiments.sweep X``. The modules are named, not
imported, here, so ``vtr --help`` is instant and a subcommand whose module is absent from this installation says so.

Config files named as in the checkout (``--config configs/quickstart.yaml``) are read from the shipped configs when
the current directory has no such file (``vtr/resources.py``); ``vtr configs path`` prints where they are.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from vtr.resources import configs_dir, resolve_config_args, shipped_configs

# the LightningCLI's subcommands (vtr.lightning_cli)
LIGHTNING_SUBCOMMANDS = {
    "fit": "train a method on a dataset, then test its best checkpoint (--config configs/...)",
    "validate": "evaluate a checkpoint on the validation split (--ckpt_path)",
    "test": "evaluate a checkpoint on the test split; writes metrics.json and the similarity matrix (--ckpt_path)",
    "predict": "run a captioner over the videos into a caption store (--config configs/captioners/...)",
}


@dataclass(frozen=True)
class ModuleCommand:
    """A subcommand that runs ``python -m <module>``; ``configs``: its ``--config`` values name config files."""

    module: str
    summary: str
    configs: bool = False


MODULE_SUBCOMMANDS: dict[str, ModuleCommand] = {
    "demo": ModuleCommand("experiments.demo", "the embedded benchmark end to end: SynthVTR, CLIP4Clip, report"),
    "synthvtr": ModuleCommand("datamodules.synthvtr", "generate the SynthVTR benchmark (or its specs only)"),
    "prepare": ModuleCommand("experiments.prepare",
                             "check a dataset against its split files, write its manifest, re-encode, extract frames"),
    "import-captions": ModuleCommand("experiments.import_captions",
                                     "convert released caption files (NarVid, Cap4Video) into a caption store"),
    "csi": ModuleCommand("experiments.csi", "ExCae's caption self-improvement: the prompt search", configs=True),
    "care-dpo": ModuleCommand("experiments.care_dpo",
                              "CaRe-DPO's pipeline: SFT, sampling, scoring, DG-DPO, captions, retrievers",
                              configs=True),
    "sweep": ModuleCommand("experiments.sweep", "run a W&B sweep file's grid locally (--resume, --jobs, --only)"),
    "report": ModuleCommand("experiments.report", "the comparison report of finished runs (tables, bootstrap, plots)"),
    "register": ModuleCommand("experiments.registry.register",
                              "put finished runs into the results registry (results/<study>, compact format)"),
    "tables": ModuleCommand("experiments.tables",
                            "regenerate (--check) the generated tables of README.md, docs/ and results/*/README.md"),
    "search": ModuleCommand("experiments.search", "index one's own videos with a trained checkpoint, search them"),
    "leaderboard": ModuleCommand("experiments.leaderboard",
                                 "every method's SynthVTR pipeline, three seeds, with its costs"),
}

CONFIGS_ACTIONS = {"path": "print the folder of the shipped configs (copy one from there to edit it)",
                   "list": "list the shipped configs as commands name them (configs/...)"}


def usage() -> str:
    width = max(map(len, [*LIGHTNING_SUBCOMMANDS, *MODULE_SUBCOMMANDS, "configs"])) + 2
    lines = ["usage: vtr <subcommand> [arguments]   (vtr <subcommand> --help: its own arguments)", "",
             "Training and evaluation (LightningCLI):"]
    lines += [f"  {name:<{width}}{summary}" for name, summary in LIGHTNING_SUBCOMMANDS.items()]
    lines += ["", "Tools (each is python -m <module> with the same arguments):"]
    lines += [f"  {name:<{width}}{cmd.summary} ({cmd.module})" for name, cmd in MODULE_SUBCOMMANDS.items()]
    lines += ["", "Shipped files:",
              f"  {'configs':<{width}}vtr configs path | vtr configs list",
              "",
              "A --config path such as configs/quickstart.yaml is read from the current directory when it exists",
              "there, else from the shipped configs:  vtr fit --config configs/quickstart.yaml"]
    return "\n".join(lines)


def _version() -> str:
    try:
        return version("vtr")
    except PackageNotFoundError:  # a checkout that was never installed
        return "unknown (not installed)"


def _configs(args: list[str]) -> int:
    help_text = "usage: vtr configs {path,list}\n" + "\n".join(f"  {a:<6}{s}" for a, s in CONFIGS_ACTIONS.items())
    if args in (["-h"], ["--help"]):
        print(help_text)
        return 0
    if len(args) != 1 or args[0] not in CONFIGS_ACTIONS:
        print(f"vtr configs: expected one of {', '.join(CONFIGS_ACTIONS)}, got {args}\n{help_text}", file=sys.stderr)
        return 2
    print(configs_dir() if args[0] == "path" else "\n".join(shipped_configs()))
    return 0


def _run_module(name: str, command: ModuleCommand, args: list[str]) -> int:
    if importlib.util.find_spec(command.module) is None:
        print(f"vtr {name}: its module {command.module} is not part of this installation of vtr ({_version()}); "
              "install a vtr that has it (pip install <repository>)", file=sys.stderr)
        return 2
    # argv[0] stays the program the user ran, so whatever re-runs sys.argv (Lightning's DDP launcher) runs vtr again
    # the subcommand's module sees only its own arguments, as under python -m
    saved = sys.argv
    sys.argv = [saved[0], *(resolve_config_args(args) if command.configs else args)]
    try:
        runpy.run_module(command.module, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        code = done.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)  # sys.exit("message"), as the interpreter prints it
        return 1
    finally:
        sys.argv = saved
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``vtr <subcommand> ...``; ``argv`` defaults to the command line. Returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name == "--version":
        print(f"vtr {_version()}")
        return 0
    if name in LIGHTNING_SUBCOMMANDS:
        from vtr.lightning_cli import main as lightning_main

        # from the console, LightningCLI reads sys.argv itself (`vtr fit ...`: the subcommand is argv[1]); Lightning's
        # DDP launcher re-runs that same command line in each further process
        lightning_main(None if argv is None else args)
        return 0
    if name == "configs":
        return _configs(rest)
    if name in MODULE_SUBCOMMANDS:
        return _run_module(name, MODULE_SUBCOMMANDS[name], rest)
    known = ", ".join([*LIGHTNING_SUBCOMMANDS, *MODULE_SUBCOMMANDS, "configs"])
    print(f"vtr: unknown subcommand {name!r}; one of: {known} (vtr --help describes them)", file=sys.stderr)
    return 2
