"""The generator is torch-free: importing it (as the CLI and the render workers do) loads neither torch nor
lightning, while ``datamodules`` still serves its data modules, SynthVTR's included."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.run_helpers import REPO

GENERATOR_MODULES = ("datamodules.synthvtr", "datamodules.synthvtr.lexicon", "datamodules.synthvtr.config",
                     "datamodules.synthvtr.specs", "datamodules.synthvtr.captions", "datamodules.synthvtr.oracle",
                     "datamodules.synthvtr.render", "datamodules.synthvtr.store", "datamodules.synthvtr.cli")


def test_generator_imports_neither_torch_nor_lightning():
    code = ("import importlib, json, sys\n"
            f"for name in {GENERATOR_MODULES!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning'))))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
