"""One checksummed SynthVTR copy per configuration: generated once, recorded, and checked before every cell.

``prepare`` generates the configuration's copy into ``<work>/data/synthvtr-<fingerprint>`` (SynthVTR's own
``prepare_data``, which writes ``synthvtr/manifest.sha256``), checks every file against that manifest, builds the
frozen video features every method reads (the feature cache in the copy, so no cell's wall time holds their one-off
encoding) and records ``<work>/<configuration>/data.json``: the fingerprint, the manifest's digest
(``content_sha256``), the file count and the times. ``check`` re-hashes the copy before a cell and refuses it when a
file changed or the digest is not the recorded one; after the cell, the run's own ``metrics.json``
(``data.generator``) must name the same fingerprint and digest.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import yaml

from experiments.leaderboard.plan import ROOT, Configuration, Settings, data_pairs
from experiments.leaderboard.state import LeaderboardError, read_json, write_json

# the backbone of every SynthVTR method config (configs/quickstart.yaml): its frozen video trunk is what the cache holds
BACKBONE_CONFIG = "configs/quickstart.yaml"


def record_path(settings: Settings, conf: Configuration) -> Path:
    return settings.work / conf.name / "data.json"


def generator_section(settings: Settings, conf: Configuration) -> dict[str, Any]:
    """The configuration's SynthVTR arguments: its data configs composed in order, the ``--data`` overrides, the
    leaderboard's root."""
    args: dict[str, Any] = {}
    for path in conf.generator:
        section = (yaml.safe_load((ROOT / path).read_text()) or {}).get("data") or {}
        if section.get("class_path") != "SynthVTR":
            raise LeaderboardError(f"{path}: its data section is not SynthVTR (class_path "
                                   f"{section.get('class_path')!r}); the leaderboard runs on SynthVTR only")
        args.update(section.get("init_args") or {})
    args.update(data_pairs(settings.data))
    args["root"] = str(settings.data_root)
    return args


def data_module(settings: Settings, conf: Configuration) -> Any:
    from datamodules import SynthVTR

    try:
        return SynthVTR(**generator_section(settings, conf))
    except TypeError as err:
        raise LeaderboardError(f"--data: {err}; use SynthVTR's arguments (datamodules/synthvtr/datamodule.py)") from err


def _backbone() -> Any:
    from lightning_modules.backbones.two_tower import PretrainedTwoTower

    spec = yaml.safe_load((ROOT / BACKBONE_CONFIG).read_text())["model"]["init_args"]["backbone"]
    if spec["class_path"] != "PretrainedTwoTower":
        raise LeaderboardError(f"{BACKBONE_CONFIG}: the backbone is {spec['class_path']}, not the PretrainedTwoTower "
                               "this step caches for")
    return PretrainedTwoTower(**copy.deepcopy(spec["init_args"]))


def prepare(settings: Settings, conf: Configuration) -> dict[str, Any]:
    """Generate (or find) the configuration's copy, check it against its manifest, warm the video feature cache and
    write ``data.json``; returns the record."""
    from datamodules.feature_cache import build_or_load_cache
    from datamodules.synthvtr import verify_content

    dm = data_module(settings, conf)
    started = time.perf_counter()
    dm.prepare_data()
    generated_s = time.perf_counter() - started
    check = verify_content(dm.root, warn=False)
    if not check.ok:
        raise LeaderboardError(check.message())
    started = time.perf_counter()
    if dm.feature_cache:
        dm.setup("fit")
        dm.setup("test")
        build_or_load_cache(dm, _backbone(), texts=False)
    cache_s = time.perf_counter() - started
    record = {"configuration": conf.name, "root": str(dm.root), "fingerprint": dm.generator_config.fingerprint(),
              "content_sha256": check.content_sha256, "files": check.files, "generator": generator_section(settings,
                                                                                                            conf),
              "generate_s": round(generated_s, 1), "video_cache_s": round(cache_s, 1),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(record_path(settings, conf), record)
    return record


def recorded(settings: Settings, conf: Configuration) -> dict[str, Any]:
    path = record_path(settings, conf)
    record = read_json(path, "the configuration's data record")
    if record is None:
        raise LeaderboardError(f"{path}: missing; the {conf.name} copy has not been prepared (`python -m "
                               "experiments.leaderboard run` prepares it before its cells)")
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("root", "content_sha256",
                                                                                            "fingerprint")):
        raise LeaderboardError(f"{path}: not a data record (root, fingerprint, content_sha256); delete it and run "
                               "`python -m experiments.leaderboard run --resume` to prepare the copy again")
    return record


def check(settings: Settings, conf: Configuration) -> dict[str, Any]:
    """The recorded copy, re-hashed now: refused when a file differs from the manifest or the manifest's digest is
    not the one recorded when the copy was prepared."""
    from datamodules.synthvtr import verify_content

    record = recorded(settings, conf)
    found = verify_content(record["root"], warn=False)
    if not found.ok:
        raise LeaderboardError(found.message())
    if found.content_sha256 != record["content_sha256"]:
        raise LeaderboardError(f"{record['root']}: its manifest's digest is {found.content_sha256[:12]} but "
                               f"{record_path(settings, conf)} recorded {record['content_sha256'][:12]}: the copy was "
                               "regenerated or edited since the leaderboard prepared it, so cells would not share one "
                               "copy. Restore it, or start the configuration again in a new --work")
    return record


def check_run(record: dict[str, Any], metrics: dict[str, Any], where: Path) -> None:
    """A finished cell's ``metrics.json`` must name the recorded copy (fingerprint and content digest, verified)."""
    generator = (metrics.get("data") or {}).get("generator") or {}
    problems = []
    if generator.get("fingerprint") != record["fingerprint"]:
        problems.append(f"generator fingerprint {generator.get('fingerprint')!r}, the copy's is "
                        f"{record['fingerprint']!r}")
    if generator.get("content_sha256") != record["content_sha256"]:
        problems.append(f"content digest {str(generator.get('content_sha256'))[:12]!r}, the copy's is "
                        f"{record['content_sha256'][:12]!r}")
    elif generator.get("content_verified") is not True:
        problems.append("its files were not verified against the manifest (content_verified is not true)")
    if problems:
        raise LeaderboardError(f"{where}: the run did not test on the configuration's copy ({'; '.join(problems)}); "
                               "its config's generator settings differ from the configuration's")
