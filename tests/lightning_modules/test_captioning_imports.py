"""The captioning package stays off the SynthVTR renderer: the simulated backend reads SynthVTR through its public
API (per-frame metadata loaders, lexicon), so importing every module of ``lightning_modules/captioning`` (in a fresh
interpreter) imports ``datamodules.synthvtr`` but neither ``datamodules.synthvtr.render`` nor PyAV."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.run_helpers import REPO

PACKAGE = REPO / "lightning_modules" / "captioning"


def _modules() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_captioning_modules_do_not_import_the_renderer():
    modules = _modules()
    assert "lightning_modules.captioning.backends.simulated" in modules
    code = ("import importlib, json, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('datamodules.synthvtr') or m == 'av')))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert "datamodules.synthvtr" in imported  # the public API is used...
    assert "datamodules.synthvtr.render" not in imported and "av" not in imported, imported  # ...not the renderer
