"""The ``python main.py ...`` commands written in the header comments of the shipped configs, parsed.

A user copies those commands, so they are the machine-readable record of how a file is composed
(which base/data/model configs precede it) and of what must run before it (the ``predict`` that writes
the caption store a NarVid experiment reads). ``tests/test_configs.py`` parses them and
``tests/test_shipped_configs.py`` runs them.

A command starts at ``python main.py`` (or ``python -m experiments.csi``, ExCae's caption self-improvement, whose
``best_prompt.txt`` a later ``predict`` reads) on a comment line of the leading comment block, continues over
lines that end with ``\\``, and ends at the line end or at a closing backtick. CaRe-DPO's whole pipeline,
``python -m experiments.care_dpo`` (subcommand ``care_dpo``), counts only where it opens a comment line: the
retriever and stage configs mention it inside sentences, which are not commands to run.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.run_helpers import REPO

CONFIGS = REPO / "configs"
COMMAND_START = "python main.py"
CSI_START = "python -m experiments.csi"  # represented as subcommand "csi"
CARE_DPO_START = "python -m experiments.care_dpo"  # represented as subcommand "care_dpo"
MODULE_STARTS = {"csi": CSI_START, "care_dpo": CARE_DPO_START}


@dataclass(frozen=True)
class HeaderCommand:
    """One command of a header: the subcommand, the ``--config`` files in order and every other argument."""

    source: Path
    subcommand: str
    configs: tuple[Path, ...]
    extra: tuple[str, ...]

    def args(self) -> list[str]:
        """Arguments for ``main.main`` (the command line after ``python main.py``); for ``csi`` and ``care_dpo``, the
        arguments of ``python -m experiments.csi`` / ``python -m experiments.care_dpo``, led by the subcommand."""
        out = [self.subcommand]
        for path in self.configs:
            out += ["--config", str(path)]
        return out + list(self.extra)

    def __str__(self) -> str:
        configs = " ".join(f"--config {p.relative_to(REPO)}" for p in self.configs)
        if self.subcommand in MODULE_STARTS:
            return " ".join([MODULE_STARTS[self.subcommand], configs, *self.extra])
        return " ".join([COMMAND_START, self.subcommand, configs, *self.extra])


def header_lines(path: Path) -> list[str]:
    """The leading comment block of a YAML file, without the ``#`` markers."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        lines.append(stripped.lstrip("#").strip())
    return lines


def header_commands(path: Path) -> list[HeaderCommand]:
    """Every ``python main.py`` command in the header of ``path``, in order."""
    lines = header_lines(path)
    commands = []
    for i, line in enumerate(lines):
        start, csi = line.find(COMMAND_START), line.find(CSI_START)
        care_dpo = line.startswith(CARE_DPO_START)
        if start < 0 and csi < 0 and not care_dpo:
            continue
        text = line if care_dpo else line[start:] if start >= 0 else line[csi:]
        j = i
        while text.endswith("\\") and j + 1 < len(lines):
            j += 1
            text = text[:-1] + " " + lines[j]
        text = text.split("`", 1)[0]
        tokens = shlex.split(text)
        if care_dpo:
            commands.append(_parse(path, ["care_dpo", *tokens[3:]]))
        else:
            commands.append(_parse(path, tokens[2:] if start >= 0 else ["csi", *tokens[3:]]))
    return commands


def _parse(source: Path, tokens: list[str]) -> HeaderCommand:
    if not tokens:
        raise ValueError(f"{source}: '{COMMAND_START}' without a subcommand in its header")
    subcommand, rest = tokens[0], tokens[1:]
    configs: list[Path] = []
    extra: list[str] = []
    k = 0
    while k < len(rest):
        token = rest[k]
        if token == "--config" and k + 1 < len(rest):
            configs.append(REPO / rest[k + 1])
            k += 2
            continue
        if token.startswith("--config="):
            configs.append(REPO / token.split("=", 1)[1])
        else:
            extra.append(token)
        k += 1
    missing = [str(p.relative_to(REPO)) for p in configs if not p.is_file()]
    if missing:
        raise ValueError(f"{source}: its header command names config files that do not exist: {missing}")
    return HeaderCommand(source, subcommand, tuple(configs), tuple(extra))


def run_command(path: Path, subcommand: str) -> HeaderCommand:
    """The first ``subcommand`` command of ``path``'s header that composes ``path`` itself."""
    for command in header_commands(path):
        if command.subcommand == subcommand and path.resolve() in [p.resolve() for p in command.configs]:
            return command
    raise LookupError(f"{path.relative_to(REPO)}: no '{COMMAND_START} {subcommand} ... --config "
                      f"{path.relative_to(REPO)}' in its header comment; write the command a user runs there "
                      "(with every --config it composes, in order)")


def prerequisites(command: HeaderCommand) -> list[HeaderCommand]:
    """The ``csi`` and ``predict`` commands the headers of the composed files ask to run first (the prompt and the
    caption stores; for ``care_dpo``, the zero-shot captions its pipeline config reads), in header order."""
    if command.subcommand not in ("fit", "care_dpo"):
        return []
    found: list[HeaderCommand] = []
    for path in command.configs:
        for other in header_commands(path):
            if other.subcommand in ("csi", "predict") and other.args() not in [f.args() for f in found]:
                found.append(other)
    return found
