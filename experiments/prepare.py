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
5. The manifest (``<annotations>/vtr_manifest.json`` unless ``--manifest``) lists every video's status; the
   data modules read it: videos marked unreadable count as missing, and past ``max_missing_fraction``
   setup fails naming the first ids and the manifest. Point ``video_dir`` at the directory it describes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from datamodules import MSRVTT, MSVD, VATEX, DiDeMo  # noqa: E402
from datamodules.base import MANIFEST_NAME, VideoTextDataModule  # noqa: E402

DATASETS: dict[str, type[VideoTextDataModule]] = {"msrvtt": MSRVTT, "msvd": MSVD, "vatex": VATEX, "didemo": DiDeMo}
SPLITS = {"msrvtt": ("train", "test"), "msvd": ("train", "val", "test"), "vatex": ("train", "val", "test"),
          "didemo": ("train", "val", "test")}
# public counts (videos per split); README "Data preparation"
EXPECTED = {"msrvtt": {"train": 9000, "test": 1000}, "msvd": {"train": 1200, "val": 100, "test": 670},
            "vatex": {"train": 25991, "val": 1500, "test": 1500},
            "didemo": {"train": 8392, "val": 1065, "test": 1004}}


# ----------------------------------------------------------------------------------------------- PyAV work
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


def extract_frames(src: Path, folder: Path, fps: float | None, short_side: int | None) -> int:
    """``folder/<n>.jpg`` at ``fps`` (every frame when None), short side resized when given."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    count, next_t, start = 0, 0.0, None
    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        for k, frame in enumerate(inp.decode(stream)):
            t = float(frame.time) if frame.time is not None else k / float(stream.average_rate or 1)
            start = t if start is None else start
            t -= start
            if fps is not None and t + 1e-6 < next_t:
                continue
            if short_side:
                scale = short_side / min(frame.width, frame.height)
                frame = frame.reformat(width=_even(frame.width * scale), height=_even(frame.height * scale))
            frame.to_image().save(folder / f"{count:05d}.jpg", quality=95)
            count += 1
            next_t = count / fps if fps else 0.0
    if count == 0:
        raise ValueError(f"no frames decoded from {src}")
    return count


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
            info["num_frame_files"] = (len(list(folder.glob("*.jpg"))) if done else
                                       extract_frames(Path(info["path"]), folder, task["frames_fps"],
                                                      task["frames_short_side"]))
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
    p.add_argument("--check-reader", choices=["decord", "pyav", "none"], default="decord",
                   help="also read two frames with this reader (the one training uses); failures are 'unreadable'")
    p.add_argument("--workers", type=int, default=1, help="processes")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="data module argument, e.g. --set train_csv=MSRVTT_train.7k.csv")
    return p.parse_args(argv)


def load_splits(args: argparse.Namespace) -> tuple[VideoTextDataModule, dict[str, list[str]]]:
    options = dict(o.split("=", 1) for o in args.options)
    dm = DATASETS[args.dataset](root=str(args.annotations), video_dir=str(args.videos.resolve()), manifest=None,
                                **options)
    splits = {}
    for name in SPLITS[args.dataset]:
        splits[name] = [v.video_id for v in dm.load_split(name).videos]  # validates ids, captions, files
    return dm, splits


def main(argv: list[str] | None = None) -> dict[str, Any]:
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
    if args.extract_frames:
        frames_dir = (out / f"frames_{args.fps if args.compress else 'src'}fps_{args.short_side}").resolve()
    tasks = []
    for vid in ids:
        src = dm.video_path(vid)
        stem = Path(vid).stem if Path(vid).suffix.lower() in (".mp4", ".avi", ".webm", ".mkv", ".mov") else vid
        tasks.append({"video_id": vid, "path": str(src),
                      "compress_to": str(video_dir / f"{stem}.mp4") if args.compress else None,
                      "fps": args.fps, "short_side": args.short_side,
                      "frames_to": str(frames_dir / stem) if frames_dir else None, "frames_fps": frames_fps,
                      "frames_short_side": None if args.compress else args.short_side,
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
                "encoding": encoding, "checked_with": args.check_reader,
                "annotations": str(args.annotations.resolve()), "splits": summary,
                "videos": videos, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(time.perf_counter() - started, 2)}
    path = args.manifest or args.annotations / MANIFEST_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)
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


if __name__ == "__main__":
    main()
