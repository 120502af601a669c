"""The files vtr ships besides its code, found from any directory: the configs and the W&B sweep files.

A checkout keeps them in ``configs/`` and ``experiments/sweeps/``. An installed wheel carries ``configs/`` as
``vtr/configs`` (``setup.py`` copies it there when the wheel is built; ``configs/local/``, the git-ignored machine
paths, stays out) and the sweep files inside the ``experiments`` package, as in the checkout.

Commands name them as a checkout does (``vtr fit --config configs/quickstart.yaml``,
``vtr sweep experiments/sweeps/narvid_table3_modules.yaml``): :func:`resolve` keeps a path that exists from the
current directory (so a copied and edited config is the one used) and otherwise reads the shipped file of that
name, saying so on stderr. ``vtr configs path`` prints the folder of the shipped configs (to copy one and edit it).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

PACKAGE_DIR = Path(__file__).resolve().parent
# the source tree this package sits in when it is not installed (a checkout, or an editable install of one)
CHECKOUT = PACKAGE_DIR.parent
# the flags whose value is a config file, in the CLIs that take one (LightningCLI, and jsonargparse's CLI of
# `vtr csi` and `vtr care-dpo`)
CONFIG_FLAGS = ("--config", "-c")
# the shipped config files (configs/local/ excepted; setup.py copies the same into the wheel): YAML configs and the
# papers' numbers (configs/paper_results.csv)
CONFIG_SUFFIXES = (".yaml", ".csv")


class ShippedFileError(FileNotFoundError):
    """A shipped folder is missing: the installation is incomplete."""


def configs_dir() -> Path:
    """The shipped configs: ``vtr/configs`` of an installed wheel, else ``configs/`` of the checkout."""
    installed = PACKAGE_DIR / "configs"
    if installed.is_dir():
        return installed
    checkout = CHECKOUT / "configs"
    # pyproject.toml marks a source tree: a bare `configs` folder beside site-packages/vtr belongs to another package
    if (CHECKOUT / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    raise ShippedFileError(f"vtr's shipped configs are missing: neither {installed} (an installed vtr) nor {checkout} "
                           "(a checkout) exists; reinstall vtr from its repository (pip install <repository>)")


def sweeps_dir() -> Path:
    """The shipped W&B sweep files: ``sweeps/`` inside the ``experiments`` package (installed or checkout)."""
    spec = importlib.util.find_spec("experiments")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        if (Path(folder) / "sweeps").is_dir():
            return Path(folder) / "sweeps"
    raise ShippedFileError(f"vtr's shipped sweep files are missing: no sweeps/ folder in the experiments package "
                           f"({folders or 'not importable'}); reinstall vtr from its repository")


# a repository-relative folder -> where its shipped copy is
SHIPPED_FOLDERS: dict[str, Callable[[], Path]] = {"configs": configs_dir, "experiments/sweeps": sweeps_dir}


def shipped(path: str | Path) -> Path | None:
    """The shipped file that the repository-relative ``path`` names (``configs/quickstart.yaml``), or None when
    ``path`` is absolute, climbs out (``..``), lies outside the shipped folders or names no shipped file."""
    pure = PurePosixPath(Path(path).as_posix())
    if pure.is_absolute() or ".." in pure.parts:
        return None
    for prefix, folder in SHIPPED_FOLDERS.items():
        head = PurePosixPath(prefix).parts
        if pure.parts[:len(head)] == head and len(pure.parts) > len(head):
            candidate = folder().joinpath(*pure.parts[len(head):])
            return candidate if candidate.is_file() else None
    return None


def resolve(path: str) -> str:
    """``path`` when it exists from the current directory; else the shipped file it names (noted on stderr, once per
    path and process); else ``path`` unchanged, so that the command's own error names the file as the user wrote
    it."""
    if Path(path).exists():
        return path
    found = shipped(path)
    if found is None:
        return path
    if path not in _NOTED:
        _NOTED.add(path)
        print(f"vtr: {path} is not under {Path.cwd()}: reading the shipped {found}", file=sys.stderr)
    return str(found)


_NOTED: set[str] = set()  # the paths resolve() has reported as read from the shipped copy


def resolve_config_args(args: Iterable[str], flags: tuple[str, ...] = CONFIG_FLAGS) -> list[str]:
    """``args`` with the value of every config flag (``--config X``, ``--config=X``, ``-c X``) passed through
    :func:`resolve`; every other argument as it is."""
    out: list[str] = []
    value_next = False
    for arg in args:
        if value_next:
            out.append(resolve(arg))
            value_next = False
            continue
        flag, eq, value = arg.partition("=")
        if eq and flag.startswith("--") and flag in flags:
            out.append(f"{flag}={resolve(value)}")
        else:
            out.append(arg)
            value_next = arg in flags
    return out


def shipped_configs() -> list[str]:
    """Every shipped config file, as a command names it (``configs/quickstart.yaml``), sorted."""
    root = configs_dir()
    return sorted(f"configs/{p.relative_to(root).as_posix()}" for p in root.rglob("*")
                  if p.is_file() and p.suffix in CONFIG_SUFFIXES and p.relative_to(root).parts[0] != "local")
