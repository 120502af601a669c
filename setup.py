"""Build hook (everything else is declared in pyproject.toml): the shipped configs go into the wheel as vtr/configs.

``configs/`` stays a top-level folder of the checkout (the documented commands name ``configs/...``), but a top-level
``configs`` package in site-packages would collide with any other distribution's, so the wheel carries it inside
``vtr``, where ``vtr.resources.configs_dir`` looks first. ``configs/local/`` (git-ignored machine paths) stays out.
An editable install needs no copy: ``vtr.resources`` reads the checkout's ``configs/`` directly.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
CONFIGS = HERE / "configs"
SUFFIXES = (".yaml", ".csv")  # vtr.resources.CONFIG_SUFFIXES; tests/test_install.py checks the two agree


def shipped_configs() -> list[Path]:
    """The config files the wheel carries, relative to ``configs/``."""
    return sorted(p.relative_to(CONFIGS) for p in CONFIGS.rglob("*")
                  if p.is_file() and p.suffix in SUFFIXES and p.relative_to(CONFIGS).parts[0] != "local")


class BuildPyWithConfigs(build_py):
    """``build_py`` that also copies ``configs/`` to ``<build_lib>/vtr/configs``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "vtr" / "configs"
        for relative in shipped_configs():
            self.mkpath(str((target / relative).parent))
            self.copy_file(str(CONFIGS / relative), str(target / relative))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return [*outputs, *(str(Path(self.build_lib) / "vtr" / "configs" / r) for r in shipped_configs())]


setup(cmdclass={"build_py": BuildPyWithConfigs})
