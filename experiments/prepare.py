"""Data preparation: check a dataset against its split files, write a manifest, optionally re-encode and
extract frames.

    python -m experiments.prepare msvd --videos /data/msvd/YouTubeClips --annotations /data/msvd
    python -m experiments.prepare msrvtt --videos /data/msrvtt/videos/all --annotations /data/msrvtt \\
        --compress --fps 3 --short-side 224 --extract-frames --workers 8

1. Parse the public annotation files with the dataset's own data module (the same code training uses),
   so an id listed in a split but absent from the annotations, an empty caption, a malformed file... fail
   here first. Counts are compared with the public ones (a difference is reported, not fatal).
2. Probe every video of every split with PyAV: ``present`` (with frames, fps, duration, resolution),
   ``missing`` or ``unreadable`` (with the decoder's error).
3. ``--compress`` re-encodes the readable videos with PyAV (H.264, fixed fps, short side, no audio; the
   CLIP4Clip ``compress_video.py`` recipe without an ffmpeg binary) into ``<out>/videos_<fps>fps_<side>``.
   The spec is recorded in the manifest and in metrics.json, so train and test provably use the same one.
4. ``--extract-frames`` writes ``<out>/frames_<fps>fps_<side>/<video stem>/<n>.jpg`` (reader ``frames``).
   ``--frames-sampler narvid --frames-max N`` reproduces NarVid's extractor (see ``extract_frames``), so the
   folders hold exactly the frames the authors' released narration describes.
5. The manifest (``<annotations>/vtr_manifest.json`` unless ``--manifest``) lists every video's status; the
   data modules read it: videos marked unreadable count as missing, and past ``max_missing_fraction``
   setup fails naming the first ids and the manifest. Point ``video_dir`` at the directory it describes.

``python -m experiments.prepare import-captions ...`` converts released caption files (NarVid narration,
Cap4Video captions) into the caption store instead: see ``experiments/import_captions.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from datamodules.atomic import write_text_atomic
from datamodules.base import MANIFEST_NAME, VideoTextDataModule
from datamodules.readers import VIDEO_EXTENSIONS
from experiments.import_captions import CaptionImportError
from experiments.import_captions import main as import_captions
from experiments.video_datasets import (
    DATASETS,
    EXPECTED,
    LISTING_OPTIONS,
    SPLITS,
    data_module_options,
    linspace_positions,
    probe,
)

# DATASETS, SPLITS, probe... live in experiments/video_datasets.py (import_captions reads them too, without importing
# this program); they stay importable from here
__all__ = ["DATASETS", "EXPECTED", "LISTING_OPTIONS", "SPLITS", "cli", "data_module_options", "extract_frames",
           "linspace_positions", "main", "prepare", "probe", "reencode"]


# ----------------------------------------------------------------------------------------------- PyAV work
def _even(x: float) -> int:
    return max(2, round(x / 2) * 2)


def reencode(src: Path, dst: Path, fps: int, short_side: int, crf: int = 23) -> None:
    """Re-encode to H.264 at ``fps`` (frames picked by timestamp) with the short side at ``short_side``."""
    import av

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.stem + f".tmp{os.getpid()}" + dst.suffix)
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        stream = inp.streams.video[0]
        stream.thread_type = "AUTO"
        ostream = None
        next_t, written, start = 0.0, 0, None
        for k, frame in enumerate(inp.decode(stream)):
            t = float(frame.time) if frame.time is not None else k / float(stream.average_rate or fps)
            start = t if start is None else start
            t -= start  # time from the first decoded frame (containers may start at a non-zero pts)
            if ostream is None:
                scale = short_side / min(frame.width, frame.height)
                ostream = out.add_stream("libx264", rate=Fraction(fps))
                ostream.width, ostream.height = _even(frame.width * scale), _even(frame.height * scale)
                ostream.pix_fmt = "yuv420p"
                ostream.options = {"crf": str(crf), "preset": "veryfast"}
            while t + 1e-6 >= next_t:  # emit (or repeat) frames on the output grid
                image = frame.reformat(width=ostream.width, height=ostream.height, format="yuv420p")
                image.pts, image.time_base = written, Fraction(1, fps)
                for packet in ostream.encode(image):
                    out.mux(packet)
                written += 1
                next_t = written / fps
        if ostream is None:
            raise ValueError(f"no frames decoded from {src}")
        for packet in ostream.encode():
            out.mux(packet)
    os.replace(tmp, dst)


FramesSampler = Literal["time", "narvid"]


def narvid_frame_filter(source_fps: float, frames_fps: float) -> tuple[int, set[int]]:
    """NarVid's (CLIP4Clip's OpenCV) 1-fps rule as ``(period, offsets)``: keep decoded frame ``k`` iff
    ``k % period in offsets``.

    The authors read ``int(CAP_PROP_FPS)`` (truncated: 29.97 fps -> 29) and, per second ``s``, seek to frames
    ``s * period + j * (period // frames_fps)`` for the first ``frames_fps`` values of ``j``. On a
    non-integer frame rate this drifts from wall-clock seconds, and the frame count can differ by one from a
    timestamp-based sampler, so it is reproduced here by decoded frame index, not by time.
    """
    if frames_fps < 1 or frames_fps != int(frames_fps):
        raise ValueError(f"--frames-sampler narvid needs an integer --frames-fps >= 1 (the authors use 1), got "
                         f"{frames_fps}")
    period = int(source_fps)
    if period < 1:
        raise ValueError(f"--frames-sampler narvid: the video's frame rate {source_fps} truncates to 0")
    step = max(1, period // int(frames_fps))
    return period, set(list(range(0, period, step))[:int(frames_fps)])


def extract_frames(src: Path, folder: Path, fps: float | None, short_side: int | None,
                   max_frames: int | None = None, sampler: FramesSampler = "time") -> int:
    """``folder/<n>.jpg`` at ``fps`` (every frame when None), short side resized when given.

    ``sampler``: ``time`` keeps the first frame at or after each ``1/fps`` tick of the timestamps; ``narvid``
    keeps frames by decoded index as NarVid's OpenCV extractor does (``narvid_frame_filter``). Both agree on
    videos with an integer frame rate. ``max_frames`` then keeps ``linspace_positions`` of them (NarVid's
    extractor caps at its ``max_frames``). The folder is written under a temporary name and renamed when
    complete, so an interrupted extraction never looks finished.
    """
    import av

    partial = folder.with_name(f".{folder.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    count, next_t, start = 0, 0.0, None
    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        keep: tuple[int, set[int]] | None = None
        if sampler == "narvid" and fps is not None:
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate:
                raise ValueError(f"{src}: no frame rate in the container; --frames-sampler narvid needs one")
            keep = narvid_frame_filter(float(rate), fps)
        for k, frame in enumerate(inp.decode(stream)):
            if keep is not None:
                if k % keep[0] not in keep[1]:
                    continue
            else:
                t = float(frame.time) if frame.time is not None else k / float(stream.average_rate or 1)
                start = t if start is None else start
                t -= start
                if fps is not None and t + 1e-6 < next_t:
                    continue
            if short_side:
                scale = short_side / min(frame.width, frame.height)
                frame = frame.reformat(width=_even(frame.width * scale), height=_even(frame.height * scale))
            frame.to_image().save(partial / f"{count:05d}.jpg", quality=95)
            count += 1
            next_t = count / fps if fps else 0.0
    if count == 0:
        shutil.rmtree(partial)
        raise ValueError(f"no frames decoded from {src}")
    kept = linspace_positions(count, max_frames)
    if len(kept) < count:  # renumber the kept frames 0..N-1, the positions the narration indexes
        wanted = {int(p) for p in kept}
        for position in range(count):
            if position not in wanted:
                (partial / f"{position:05d}.jpg").unlink()
        for new, old in enumerate(kept):
            os.replace(partial / f"{int(old):05d}.jpg", partial / f"{new:05d}.jpg")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)
    return len(kept)


def _job(task: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One video: probe, optionally re-encode (then probe the output) and extract frames."""
    vid, src = task["video_id"], Path(task["path"])
    info = probe(src)
    if info["status"] != "present":
        return vid, info
    info["source"] = dict(info)
    try:
        if task.get("compress_to"):
            dst = Path(task["compress_to"])
            if not dst.is_file():
                reencode(src, dst, task["fps"], task["short_side"])
            info = {**probe(dst), "source": info["source"]}
        if task.get("check_reader") and info["status"] == "present":  # what training will decode with
            from datamodules.readers import build_reader

            build_reader(task["check_reader"], 32)(Path(info["path"]), 2, "uniform")
        if task.get("frames_to") and info["status"] == "present":
            folder = Path(task["frames_to"])
            done = folder.is_dir() and any(folder.glob("*.jpg"))
            frames_src = src if task.get("frames_sampler") == "narvid" else Path(info["path"])
            info["num_frame_files"] = (len(list(folder.glob("*.jpg"))) if done else
                                       extract_frames(frames_src, folder, task["frames_fps"],
                                                      task["frames_short_side"], task.get("frames_max"),
                                                      task.get("frames_sampler", "time")))
    except Exception as exc:  # a file PyAV opens but cannot transcode is unreadable for training too
        info = {**info, "status": "unreadable", "error": f"{type(exc).__name__}: {exc}"}
    return vid, info


def _progress(iterable: Iterable[Any], total: int, desc: str) -> Iterable[Any]:
    try:
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit="video")
    except ImportError:  # pragma: no cover
        return iterable


# ----------------------------------------------------------------------------------------------- driver
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.prepare", description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("--videos", required=True, type=Path, help="folder of the original videos")
    p.add_argument("--annotations", required=True, type=Path, help="dataset root with the annotation/split files")
    p.add_argument("--out", type=Path, default=None, help="where compressed videos/frames go (default: annotations)")
    p.add_argument("--manifest", type=Path, default=None, help=f"default: <annotations>/{MANIFEST_NAME}")
    p.add_argument("--compress", action="store_true", help="re-encode with PyAV (fixed fps and short side)")
    p.add_argument("--fps", type=int, default=3, help="frame rate of --compress (CLIP4Clip: 3)")
    p.add_argument("--short-side", type=int, default=224, help="short side of --compress (CLIP4Clip: 224)")
    p.add_argument("--extract-frames", action="store_true", help="write <stem>/<n>.jpg frame folders")
    p.add_argument("--frames-fps", type=float, default=None,
                   help="frame rate of --extract-frames (default: --fps; every frame of the compressed copy)")
    p.add_argument("--frames-sampler", choices=["time", "narvid"], default="time",
                   help="which frames --frames-fps keeps: 'time' (first frame at/after each tick) or 'narvid' "
                        "(decoded frame k*int(fps), NarVid's OpenCV extractor; same on integer frame rates)")
    p.add_argument("--frames-max", type=int, default=None,
                   help="cap each frame folder at N frames, kept at linspace(0, n-1, N) (NarVid's extractor; "
                        "12 for its MSR-VTT/MSVD/VATEX narration, 32 for DiDeMo)")
    p.add_argument("--check-reader", choices=["decord", "pyav", "none"], default="decord",
                   help="also read two frames with this reader (the one training uses); failures are 'unreadable'")
    p.add_argument("--workers", type=int, default=1, help="processes")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="data module argument, e.g. --set train_csv=MSRVTT_train.7k.csv")
    args = p.parse_args(argv)
    args.options = data_module_options(p, args.options, args.dataset, {
        "root": "--annotations", "video_dir": "--videos", "manifest": "--manifest"})
    return args


def load_splits(args: argparse.Namespace) -> tuple[VideoTextDataModule, dict[str, list[str]]]:
    dm = DATASETS[args.dataset](root=str(args.annotations), video_dir=str(args.videos.resolve()), manifest=None,
                                **{**args.options, **LISTING_OPTIONS.get(args.dataset, {})})
    splits = {}
    for name in SPLITS[args.dataset]:
        splits[name] = [v.video_id for v in dm.load_split(name).videos]  # validates ids, captions, files
    return dm, splits


def main(argv: list[str] | None = None) -> Any:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["import-captions"]:  # the released-caption importer shares this entry point
        return import_captions(argv[1:])
    return prepare(argv)


def frames_folder_name(rate: str, short_side: int | None, max_frames: int | None, sampler: FramesSampler) -> str:
    """``frames_<rate>fps_<side>[_max<N>][_narvid]``: the name says how the frames were picked."""
    name = f"frames_{rate}fps_{short_side}"
    if max_frames is not None:
        name += f"_max{max_frames}"
    return name + ("_narvid" if sampler == "narvid" else "")


def prepare(argv: list[str]) -> dict[str, Any]:
    """The dataset check / manifest / re-encode / frame extraction run (see the module docstring)."""
    args = parse_args(argv)
    started = time.perf_counter()
    if not args.videos.is_dir():
        raise SystemExit(f"--videos {args.videos} is not a directory")
    dm, splits = load_splits(args)
    out = args.out or args.annotations
    ids = list(dict.fromkeys(v for vs in splits.values() for v in vs))
    encoding: dict[str, Any] | None = None
    video_dir = args.videos.resolve()
    frames_dir = None
    frames_fps = args.frames_fps if args.frames_fps is not None else (None if args.compress else float(args.fps))
    if args.compress:
        video_dir = (out / f"videos_{args.fps}fps_{args.short_side}").resolve()
        encoding = {"tool": "pyav-libx264", "fps": args.fps, "short_side": args.short_side, "crf": 23,
                    "audio": False, "source_video_dir": str(args.videos.resolve())}
    if args.frames_max is not None and args.frames_max < 1:
        raise SystemExit(f"--frames-max must be >= 1, got {args.frames_max}")
    if args.extract_frames:
        if args.frames_sampler == "narvid":
            if frames_fps is None:
                raise SystemExit("--frames-sampler narvid needs --frames-fps (NarVid extracts at 1)")
            try:  # fail on a fractional rate before any video work
                narvid_frame_filter(30.0, frames_fps)
            except ValueError as exc:
                raise SystemExit(str(exc)) from exc
        # the rate in the name is the rate of the frames (every frame of the compressed copy: --fps)
        rate = f"{frames_fps:g}" if frames_fps is not None else str(args.fps)
        frames_dir = (out / frames_folder_name(rate, args.short_side, args.frames_max, args.frames_sampler)).resolve()
    tasks = []
    for vid in ids:
        src = dm.video_path(vid)
        # the folder name the 'frames' reader looks up (DiDeMo ids carry their extension)
        stem = Path(vid).stem if Path(vid).suffix.lower() in VIDEO_EXTENSIONS else vid
        tasks.append({"video_id": vid, "path": str(src),
                      "compress_to": str(video_dir / f"{stem}.mp4") if args.compress else None,
                      "fps": args.fps, "short_side": args.short_side,
                      "frames_to": str(frames_dir / stem) if frames_dir else None, "frames_fps": frames_fps,
                      # NarVid's frames come from the original videos, so the narvid sampler never reads the copy
                      "frames_short_side": (args.short_side if not args.compress or args.frames_sampler == "narvid"
                                            else None),
                      "frames_max": args.frames_max, "frames_sampler": args.frames_sampler,
                      "check_reader": None if args.check_reader == "none" else args.check_reader})
    videos: dict[str, dict[str, Any]] = {}
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            for vid, info in _progress(pool.map(_job, tasks, chunksize=4), len(tasks), f"{args.dataset} videos"):
                videos[vid] = info
    else:
        for vid, info in _progress(map(_job, tasks), len(tasks), f"{args.dataset} videos"):
            videos[vid] = info
    summary = {}
    for name, split_ids in splits.items():
        status = [videos[v]["status"] for v in split_ids]
        summary[name] = {"listed": len(split_ids), "present": status.count("present"),
                         "missing": status.count("missing"), "unreadable": status.count("unreadable"),
                         "expected": EXPECTED[args.dataset].get(name),
                         "first_missing": [v for v in split_ids if videos[v]["status"] != "present"][:20]}
    manifest = {"dataset": args.dataset, "video_dir": str(video_dir),
                "frames_dir": str(frames_dir) if frames_dir else None, "frames_fps": frames_fps,
                "frames_max": args.frames_max if frames_dir else None,
                "frames_sampler": args.frames_sampler if frames_dir else None,
                "encoding": encoding, "checked_with": args.check_reader,
                "annotations": str(args.annotations.resolve()), "splits": summary,
                "videos": videos, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(time.perf_counter() - started, 2)}
    path = args.manifest or args.annotations / MANIFEST_NAME
    write_text_atomic(path, json.dumps(manifest, indent=1))
    print(f"manifest: {path}")
    print("| split | listed | present | missing | unreadable | public count |")
    print("|---|---|---|---|---|---|")
    for name, s in summary.items():
        print(f"| {name} | {s['listed']} | {s['present']} | {s['missing']} | {s['unreadable']} | {s['expected']} |")
        if s["first_missing"]:
            print(f"  {name}: first absent/unreadable: {s['first_missing'][:5]}")
    print(f"train/test with: --data.init_args.video_dir {video_dir}"
          + (f"  (or reader frames: --data.init_args.video_dir {frames_dir} --data.init_args.reader frames)"
             if frames_dir else ""))
    return manifest


def cli() -> None:
    """The command line: a bad released caption file ends with its one-line message, not a traceback."""
    try:
        main()
    except CaptionImportError as exc:  # the message names the file, the key or id and what to do
        raise SystemExit(f"import-captions: error: {exc}") from None


if __name__ == "__main__":
    cli()
