"""The public video datasets as the data tools see them (``experiments.prepare`` and
``experiments.import_captions``): their data modules, splits and public counts, how to list every video of a split,
``--set KEY=VALUE`` options typed by a data module's signature, and the per-file facts both read (a PyAV probe of
one video, the frame positions a capped extraction keeps).

Kept out of both programs so that neither imports the other for them (``prepare`` dispatches ``import-captions`` to
``import_captions``, which builds on this module alone).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from datamodules import MSRVTT, MSVD, VATEX, DiDeMo
from datamodules.base import VideoTextDataModule

__all__ = ["DATASETS", "EXPECTED", "LISTING_OPTIONS", "SPLITS", "data_module_options", "linspace_positions", "probe"]

DATASETS: dict[str, type[VideoTextDataModule]] = {"msrvtt": MSRVTT, "msvd": MSVD, "vatex": VATEX, "didemo": DiDeMo}
SPLITS = {"msrvtt": ("train", "test"), "msvd": ("train", "val", "test"), "vatex": ("train", "val", "test"),
          "didemo": ("train", "val", "test")}
# options under which a data module lists every video of its annotation files: MSR-VTT's default model selection holds
# out training videos (val_protocol: heldout), which would leave them out of the train list prepare and import-captions
# enumerate; they are MSR-VTT training videos all the same, so listing train whole covers them
LISTING_OPTIONS: dict[str, dict[str, Any]] = {"msrvtt": {"val_protocol": "test"}}
# public counts (videos per split); docs/data/index.md
EXPECTED = {"msrvtt": {"train": 9000, "test": 1000}, "msvd": {"train": 1200, "val": 100, "test": 670},
            "vatex": {"train": 25991, "val": 1500, "test": 1500},
            "didemo": {"train": 8392, "val": 1065, "test": 1004}}


def probe(path: Path) -> dict[str, Any]:
    """Status and stream facts of one file; decodes the first frame so a broken file is caught here."""
    import av

    if not path.is_file():
        return {"status": "missing", "path": str(path)}
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise ValueError("no decodable frame")
            fps = float(stream.average_rate) if stream.average_rate else None
            duration = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                        else (container.duration / 1e6 if container.duration else None))
            frames = int(stream.frames) or (round(duration * fps) if duration and fps else None)
            return {"status": "present", "path": str(path), "frames": frames, "fps": fps,
                    "duration": round(duration, 3) if duration else None, "width": first.width,
                    "height": first.height}
    except Exception as exc:  # PyAV raises many types; the manifest records the message
        return {"status": "unreadable", "path": str(path), "error": f"{type(exc).__name__}: {exc}"}


def linspace_positions(num_available: int, max_frames: int | None) -> np.ndarray:
    """Positions kept when ``num_available`` frames are capped at ``max_frames``: ``linspace(0, n-1, max_frames)``
    truncated to integers (CLIP4Clip's ``slice_framepos 2``, which NarVid's extractor applies); all when fewer."""
    if max_frames is None or num_available <= max_frames:
        return np.arange(num_available)
    return np.linspace(0, num_available - 1, num=max_frames, dtype=int)


def data_module_options(parser: argparse.ArgumentParser, options: list[str], dataset: str,
                        reserved: dict[str, str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs as the data module's keyword arguments, typed by its signature (``val_videos=100``
    is the integer 100). A pair without ``=``, a key the data module does not take, a value of the wrong type, a key
    given twice, or one of ``reserved`` (key -> the option that sets it) is a usage error (exit 2) naming it."""
    from jsonargparse import ArgumentParser as SignatureParser

    cls = DATASETS[dataset]
    seen: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        key = key.strip()
        if not sep or not key:
            parser.error(f"--set {option!r}: expected KEY=VALUE, e.g. --set train_csv=MSRVTT_train.7k.csv")
        if key in reserved:
            parser.error(f"--set {key}: set it with {reserved[key]}, not --set")
        if key in seen:
            parser.error(f"--set {key}: given twice ({seen[key]!r} and {value!r})")
        seen[key] = value
    if not seen:
        return {}
    signature = SignatureParser(exit_on_error=False)
    signature.add_class_arguments(cls, "data", skip=set(reserved) | {"root"})
    try:
        parsed = signature.parse_args([f"--data.{key}={value}" for key, value in seen.items()])
    except Exception as exc:  # jsonargparse's ArgumentError: the key and the type it expected
        accepted = sorted(k.split(".", 1)[1] for k in signature.get_defaults().keys() if k.startswith("data."))
        message = " ".join(str(exc).split())
        parser.error(f"--set: {message} ({cls.__name__} takes: {', '.join(accepted)})")
    return {key: parsed.data[key] for key in seen}
