"""Video readers compared on the same clips: clips/s per DataLoader worker count.

Generates (once, into ``--data``) H.264 clips shaped like MSR-VTT (320x240, 15 s at 30 fps by default,
moving noise so the encoder cannot cheat), a 3 fps / short-side-224 re-encode made with
``experiments.prepare --compress`` (the CLIP4Clip recipe) and frame folders of that re-encode. Then it
times the evaluation path (``VideoDataset``: uniform sampling, resize + centre crop, uint8 out) for every
reader x source x worker count, reading every clip once per pass.

    python -m benchmarks.decode [--clips 24 --seconds 15 --fps 30 --workers 0 1 2 --num-frames 12]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_clip(path: Path, seconds: float, fps: int, width: int, height: int, seed: int) -> None:
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 255, (height * 2, width * 2, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(int(seconds * fps)):  # a panning textured scene: realistic motion, P-frames
            y, x = (i * 2) % height, (i * 3) % width
            frame = base[y:y + height, x:x + width]
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def prepare_data(root: Path, clips: int, seconds: float, fps: int) -> dict[str, Path]:
    """Original clips, the 3 fps / 224 re-encode and its frame folders (made by experiments.prepare)."""
    from experiments import prepare

    originals = root / "videos"
    ids = [f"video{i}" for i in range(clips)]
    for i, vid in enumerate(ids):
        if not (originals / f"{vid}.mp4").is_file():
            make_clip(originals / f"{vid}.mp4", seconds, fps, 320, 240, i)
    (root / "MSRVTT_data.json").write_text(
        '{"videos": [], "sentences": [' + ",".join(f'{{"video_id": "{v}", "caption": "c", "sen_id": {k}}}'
                                                   for k, v in enumerate(ids)) + "]}")
    (root / "MSRVTT_train.9k.csv").write_text("video_id\n" + "\n".join(ids[:1]) + "\n")
    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\n" + "".join(f"ret{k},msr{k},{v},c\n" for k, v in enumerate(ids)))
    compressed = root / "videos_3fps_224"
    if not compressed.is_dir() or len(list(compressed.glob("*.mp4"))) < clips:
        prepare.main(["msrvtt", "--videos", str(originals), "--annotations", str(root), "--compress", "--fps", "3",
                      "--short-side", "224", "--extract-frames", "--workers", str(min(2, os.cpu_count() or 1)),
                      # one training video: nothing to hold out for validation (the MSR-VTT default holds out 1,000)
                      "--set", "val_protocol=test"])
    return {"original": originals, "3fps-224": compressed, "frames": root / "frames_3fps_224"}


def time_reader(video_dir: Path, reader: str, workers: int, num_frames: int, image_size: int, passes: int,
                ) -> tuple[float, float]:
    import torch
    from torch.utils.data import DataLoader

    from datamodules.annotations import Split, VideoEntry
    from datamodules.collate import collate_videos
    from datamodules.datasets import VideoDataset, VideoSource

    if reader == "frames":
        entries = sorted(p for p in video_dir.iterdir() if p.is_dir())
    else:
        entries = sorted(video_dir.glob("*.mp4"))
    split = Split("bench", [VideoEntry(p.stem, p) for p in entries], [])
    source = VideoSource(split, reader, image_size, num_frames)  # type: ignore[arg-type]
    loader = DataLoader(VideoDataset(split, source), batch_size=4, num_workers=workers, collate_fn=collate_videos,
                        persistent_workers=workers > 0)
    torch.set_num_threads(1)
    rates = []
    for p in range(passes + 1):
        started = time.perf_counter()
        n = sum(len(batch) for batch in loader)
        if p > 0:  # pass 0 warms up workers and the page cache
            rates.append(n / (time.perf_counter() - started))
    return max(rates), sum(rates) / len(rates)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "data" / "bench_decode")
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--num-frames", type=int, default=12)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--passes", type=int, default=2)
    args = p.parse_args(argv)
    sources = prepare_data(args.data, args.clips, args.seconds, args.fps)
    combos = [("decord", "original"), ("pyav", "original"), ("decord", "3fps-224"), ("pyav", "3fps-224"),
              ("frames", "frames")]
    print(f"{args.clips} clips, 320x240 {args.seconds:g} s at {args.fps} fps (re-encode: 3 fps, short side 224); "
          f"{args.num_frames} uniform frames -> {args.image_size}px; {os.cpu_count()} CPU cores\n")
    print("| reader | source | workers | clips/s (best) | clips/s (mean) |")
    print("|---|---|---|---|---|")
    for reader, source in combos:
        for workers in args.workers:
            best, mean = time_reader(sources[source], reader, workers, args.num_frames, args.image_size, args.passes)
            print(f"| {reader} | {source} | {workers} | {best:.1f} | {mean:.1f} |", flush=True)


if __name__ == "__main__":
    main()
