"""A generated SynthVTR on disk: writing it (MSR-VTT layout plus ``synthvtr/`` extras) and reading it back.

:func:`generate_synthvtr` writes the CLIP4Clip MSR-VTT files (``MSRVTT_data.json``, the train and
JSFusion test csv files, ``videos/*.mp4``), so the real MSR-VTT reading path (``datamodules/msrvtt.py``)
serves it, and beside them ``synthvtr/``: the specs, per-frame metadata, captions with their facts, the
videos' facts, the oracle, ``manifest.sha256`` (every annotation file's and video's sha256, ``sha256sum -c``
format, relative to the root) and ``generation.json`` (fingerprint, content digest, encoder, counts, timings; the
completeness marker). :func:`verify_content` checks a copy against its manifest. The ``load_*`` readers accept the
dataset root or its ``synthvtr/`` folder.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datamodules.atomic import write_text_atomic
from datamodules.checksums import file_sha256
from datamodules.jsonl import read_jsonl_lines
from datamodules.synthvtr.captions import frame_metadata
from datamodules.synthvtr.config import GENERATOR_VERSION, SynthVTRConfig
from datamodules.synthvtr.oracle import CaptionFacts, SynthVTRData, build_synthvtr
from datamodules.synthvtr.specs import VideoSpec

log = logging.getLogger(__name__)

_VIDEO_NAME = re.compile(r"^synth\d+\.mp4(\.tmp)?$")
ANNOTATION_FILES: tuple[str, ...] = (
    "MSRVTT_data.json", "MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv", "synthvtr/specs.jsonl",
    "synthvtr/frames.jsonl", "synthvtr/captions.jsonl", "synthvtr/video_facts.jsonl", "synthvtr/oracle.json",
)
# Every content file's sha256, one ``<hex>  <path relative to the root>`` line each, sorted by path: the format of
# ``sha256sum``, so ``cd <root> && sha256sum -c synthvtr/manifest.sha256`` checks a copy without Python.
MANIFEST = "synthvtr/manifest.sha256"
_MANIFEST_LINE = re.compile(r"^([0-9a-f]{64})  (\S+)$")



def _jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def is_complete(out_dir: str | Path, config: SynthVTRConfig) -> bool:
    """True if ``out_dir`` holds a finished generation of exactly ``config`` (fingerprint and all videos)."""
    out = Path(out_dir)
    gen = out / "synthvtr" / "generation.json"
    try:
        info = json.loads(gen.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if info.get("fingerprint") != config.fingerprint():
        return False
    if not all((out / rel).is_file() for rel in (*ANNOTATION_FILES, MANIFEST)):
        return False
    video_dir = out / "videos"
    return all((video_dir / f"synth{i:05d}.mp4").is_file() for i in range(config.num_videos))


def content_files(config: SynthVTRConfig) -> list[str]:
    """The files a generation of ``config`` consists of (relative to the root): what the manifest lists."""
    return sorted([*ANNOTATION_FILES, *(f"videos/synth{i:05d}.mp4" for i in range(config.num_videos))])


def write_manifest(out_dir: str | Path, config: SynthVTRConfig) -> str:
    """Hash every content file into ``synthvtr/manifest.sha256`` (atomically); returns the content digest.

    The content digest is the sha256 of the manifest's bytes: equal digests mean equal files, so it names the exact
    copy a run used (``generation.json`` and the data fingerprint in ``metrics.json`` record it).
    """
    out = Path(out_dir)
    text = "".join(f"{file_sha256(out / rel)}  {rel}\n" for rel in content_files(config))
    write_text_atomic(out / MANIFEST, text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class ContentCheck:
    """A copy of SynthVTR compared with its manifest (:func:`verify_content`)."""

    manifest: Path
    content_sha256: str | None  # sha256 of the manifest's bytes; None when there is no manifest
    files: int = 0  # files the manifest lists
    differ: list[str] = field(default_factory=list)  # listed, present, other bytes
    missing: list[str] = field(default_factory=list)  # listed, absent
    extra: list[str] = field(default_factory=list)  # videos/synth*.mp4 present but not listed

    @property
    def ok(self) -> bool:
        return self.content_sha256 is not None and not (self.differ or self.missing or self.extra)

    def record(self) -> dict[str, Any]:
        """What ``metrics.json`` records about the copy (``data.generator``)."""
        return {"content_sha256": self.content_sha256, "content_verified": self.ok,
                "content_mismatch": {"files": self.files, "differ": len(self.differ), "missing": len(self.missing),
                                     "extra": len(self.extra)}}

    def message(self) -> str:
        """One line for the warning: counts, the first few paths, what it means and what to do."""
        root = self.manifest.parent.parent
        if self.content_sha256 is None:
            return (f"SynthVTR at {root} has no manifest ({self.manifest}): its files cannot be checked and runs on it "
                    "record no content digest; regenerate it with `python -m datamodules.synthvtr --out "
                    f"{root} --force` (with its settings) to get one")
        parts = [f"{len(v)} {name}" + (f" (first: {', '.join(v[:3])})" if v else "")
                 for name, v in (("differ", self.differ), ("missing", self.missing),
                                 ("not listed", self.extra)) if v]
        return (f"SynthVTR at {root} does not match its manifest {self.manifest}: of {self.files} files, "
                + "; ".join(parts) + ". Numbers from this copy are not comparable with runs on the manifest's copy "
                f"(content {self.content_sha256[:12]}); regenerate with `python -m datamodules.synthvtr --out {root} "
                "--force` (with its settings) or restore the files")


def verify_content(root: str | Path, warn: bool = True) -> ContentCheck:
    """Compare the files under ``root`` with ``synthvtr/manifest.sha256``; one warning (``warn``) when they differ.

    A malformed manifest is an error (it names the file and the line), not a mismatch.
    """
    root = Path(root)
    manifest = root / MANIFEST
    try:
        text = manifest.read_text(encoding="utf-8")
    except FileNotFoundError:
        check = ContentCheck(manifest, None)
    else:
        check = ContentCheck(manifest, hashlib.sha256(text.encode("utf-8")).hexdigest())
        listed = set()
        for number, line in enumerate(text.splitlines(), 1):
            m = _MANIFEST_LINE.match(line)
            if m is None or m.group(2).startswith("/") or ".." in Path(m.group(2)).parts:
                raise ValueError(f"{manifest}:{number}: expected '<sha256 hex>  <relative path>', got {line[:120]!r}; "
                                 "the manifest is damaged: regenerate the dataset (python -m datamodules.synthvtr "
                                 "--force)")
            expected, rel = m.groups()
            listed.add(rel)
            path = root / rel
            if not path.is_file():
                check.missing.append(rel)
            elif file_sha256(path) != expected:
                check.differ.append(rel)
        check.files = len(listed)
        videos = root / "videos"
        if videos.is_dir():
            check.extra = sorted(f"videos/{p.name}" for p in videos.iterdir()
                                 if _VIDEO_NAME.match(p.name) and f"videos/{p.name}" not in listed)
    if warn and not check.ok:
        log.warning("%s", check.message())
    return check


def _annotation_files(data: SynthVTRData, oracle: dict[str, Any]) -> dict[str, str]:
    """Every annotation file's relative path and text (MSR-VTT layout + the ``synthvtr/`` extras)."""
    cfg = data.config
    duration = cfg.num_frames / cfg.fps
    msrvtt = {
        "info": {"description": f"SynthVTR {GENERATOR_VERSION} (fingerprint {cfg.fingerprint()})"},
        "videos": [{"video_id": s.video_id, "url": f"synthvtr://family/{s.family}", "category": 0,
                    "split": s.split, "id": s.index, "start time": 0, "end time": duration}
                   for s in data.specs],
        "sentences": [{"caption": c.caption, "video_id": c.video_id, "sen_id": c.sen_id}
                      for c in data.captions],
    }
    first: dict[str, CaptionFacts] = {}
    for c in data.captions:
        first.setdefault(c.video_id, c)
    test = data.ids("test")
    frames = ({"video_id": s.video_id, "num_frames": cfg.num_frames, "fps": cfg.fps,
               "background": s.background, "frames": frame_metadata(s, cfg)} for s in data.specs)
    return {
        "MSRVTT_data.json": json.dumps(msrvtt),
        "MSRVTT_train.9k.csv": _csv_text(["video_id"], ([v] for v in data.ids("train"))),
        "MSRVTT_JSFUSION_test.csv": _csv_text(
            ["key", "vid_key", "video_id", "sentence"],
            ([f"ret{k}", f"msr{v.removeprefix('synth')}", v, first[v].caption] for k, v in enumerate(test))),
        "synthvtr/specs.jsonl": _jsonl(s.to_json() for s in data.specs),
        "synthvtr/frames.jsonl": _jsonl(frames),
        "synthvtr/captions.jsonl": _jsonl({"video_id": c.video_id, "sen_id": c.sen_id, "caption": c.caption,
                                           "facts": sorted(c.facts)} for c in data.captions),
        "synthvtr/video_facts.jsonl": _jsonl({"video_id": s.video_id, "split": s.split, "family": s.family,
                                              "facts": sorted(data.facts[s.video_id])} for s in data.specs),
        "synthvtr/oracle.json": json.dumps(oracle, indent=2, sort_keys=True),
    }


def generate_synthvtr(out_dir: str | Path, config: SynthVTRConfig, workers: int | None = None,
                      progress: bool = True) -> Path:
    """Generate the benchmark into ``out_dir`` (MSR-VTT layout) and return ``out_dir``.

    Idempotent: returns at once if ``out_dir`` already holds this config's fingerprint with all videos.
    Crash-safe: ``synthvtr/generation.json`` (the completeness marker) is removed first and written last,
    every file is written to a temp name and renamed, and ``synthvtr/in_progress.json`` lets a re-run of
    the *same* config keep the videos it already finished. A different config first deletes the old
    ``synth*.mp4`` files so that no stale video survives.
    """
    out = Path(out_dir)
    t_start = time.perf_counter()
    if is_complete(out, config):
        return out
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    meta_dir, video_dir = out / "synthvtr", out / "videos"
    meta_dir.mkdir(parents=True, exist_ok=True)
    video_dir.mkdir(parents=True, exist_ok=True)
    fp = config.fingerprint()
    (meta_dir / "generation.json").unlink(missing_ok=True)
    marker = meta_dir / "in_progress.json"
    try:
        resume = json.loads(marker.read_text(encoding="utf-8")).get("fingerprint") == fp
    except (OSError, json.JSONDecodeError):
        resume = False
    for p in video_dir.iterdir():
        if _VIDEO_NAME.match(p.name) and (not resume or p.name.endswith(".tmp")):
            p.unlink()
    write_text_atomic(marker, json.dumps({"fingerprint": fp, "config": asdict(config)}))

    t0 = time.perf_counter()
    data = build_synthvtr(config)
    oracle = data.oracle()
    for rel, text in _annotation_files(data, oracle).items():
        write_text_atomic(out / rel, text)
    t_annot = time.perf_counter() - t0

    todo = [s for s in data.specs if not (video_dir / f"{s.video_id}.mp4").is_file()]
    from datamodules.synthvtr.render import render_all  # only writing renders: readers need neither PIL nor PyAV

    t0 = time.perf_counter()
    times = render_all(todo, video_dir, config, workers, progress)
    t_render = time.perf_counter() - t0

    from datamodules.synthvtr.render import encoder_identity

    content_sha256 = write_manifest(out, config)
    n_train, n_test = len(data.ids("train")), len(data.ids("test"))
    render_cpu, encode_cpu = sum(t[0] for t in times), sum(t[1] for t in times)
    info = {
        "generator_version": GENERATOR_VERSION,
        "fingerprint": fp,
        "content_sha256": content_sha256,
        "manifest": MANIFEST,
        "encoder": encoder_identity(),
        "config": asdict(config),
        "counts": {"videos": len(data.specs), "train_videos": n_train, "test_videos": n_test,
                   "families": config.num_families, "test_families": config.test_families,
                   "captions": len(data.captions)},
        "oracle": {k: v for k, v in oracle.items() if k != "protocol"},
        "timings": {
            "workers": workers,
            "videos_rendered": len(times),
            "resumed": resume,
            "annotations_s": round(t_annot, 3),
            "render_wall_s": round(t_render, 3),
            "total_s": round(time.perf_counter() - t_start, 3),
            "cpu_ms_per_video": round(1000 * (render_cpu + encode_cpu) / max(1, len(times)), 2),
            "cpu_ms_per_video_render": round(1000 * render_cpu / max(1, len(times)), 2),
            "cpu_ms_per_video_encode": round(1000 * encode_cpu / max(1, len(times)), 2),
        },
        "python": sys.version.split()[0],
    }
    write_text_atomic(meta_dir / "generation.json", json.dumps(info, indent=2))
    marker.unlink(missing_ok=True)
    return out


def _meta_dir(root: str | Path) -> Path:
    """Accept the dataset root or its ``synthvtr/`` folder."""
    root = Path(root)
    return root / "synthvtr" if (root / "synthvtr").is_dir() else root


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    # written whole (``write_text_atomic``): no torn line to tolerate
    for _, record in read_jsonl_lines(path, tolerate_torn_tail=False):
        yield record


def load_frame_metadata(root: str | Path) -> dict[str, list[dict[str, Any]]]:
    """``video_id`` -> per-frame metadata (``frame``, ``time``, ``background``, visible ``objects``)."""
    return {r["video_id"]: r["frames"] for r in _read_jsonl(_meta_dir(root) / "frames.jsonl")}


def load_caption_facts(root: str | Path) -> list[CaptionFacts]:
    """Every caption with its facts, in ``sen_id`` order (feed straight into :func:`oracle_recall`)."""
    return [CaptionFacts(r["video_id"], frozenset(r["facts"]), r["sen_id"], r["caption"])
            for r in _read_jsonl(_meta_dir(root) / "captions.jsonl")]


def load_video_facts(root: str | Path) -> dict[str, frozenset[str]]:
    """``video_id`` -> its fact set."""
    return {r["video_id"]: frozenset(r["facts"]) for r in _read_jsonl(_meta_dir(root) / "video_facts.jsonl")}


def load_specs(root: str | Path) -> list[VideoSpec]:
    """The video specs (e.g. to re-render a video or to inspect a family)."""
    return [VideoSpec.from_json(r) for r in _read_jsonl(_meta_dir(root) / "specs.jsonl")]
