"""Rendering: the mp4 files decode at the right size and show what the frame metadata says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datamodules.synthvtr import EventSpec, ObjectSpec, SynthVTRConfig, VideoSpec, is_complete, load_frame_metadata
from datamodules.synthvtr.captions import frame_metadata
from datamodules.synthvtr.render import render_frames, write_mp4
from datamodules.synthvtr.store import generate_synthvtr
from tests.datamodules.synthvtr.conftest import N_VIDEOS, TINY


def test_videos_decode_with_right_size_and_red_where_metadata_says(tiny_root: Path, tmp_path: Path):
    decord = pytest.importorskip("decord")
    for vid in ("synth00000", f"synth{N_VIDEOS - 1:05d}"):
        vr = decord.VideoReader(str(tiny_root / "videos" / f"{vid}.mp4"))
        assert len(vr) == TINY.num_frames
        assert vr[0].asnumpy().shape == (TINY.image_size, TINY.image_size, 3)

    # A frame with exactly one red object, as large as possible.
    frames = load_frame_metadata(tiny_root)
    candidates = [(o["r"], vid, f, o) for vid, per_frame in frames.items() for f, fr in enumerate(per_frame)
                  for o in fr["objects"] if [p["colour"] for p in fr["objects"]].count("red") == 1
                  and o["colour"] == "red"]
    if candidates:
        _, vid, f, obj = max(candidates, key=lambda c: c[0])
        video_path = tiny_root / "videos" / f"{vid}.mp4"
    else:  # seed-proof fallback: a hand-made spec with one red square
        spec = VideoSpec("synth99999", 0, 0, 0, "test", "grass", (ObjectSpec("red", "square", "static", (0.3, 0.6)),),
                         EventSpec("change", 0, 0.9, "blue"), render_seed=1)
        video_path = tmp_path / "red.mp4"
        write_mp4(render_frames(spec, TINY), video_path, TINY.fps)
        f, obj = 0, frame_metadata(spec, TINY)[0]["objects"][0]
    img = decord.VideoReader(str(video_path))[f].asnumpy().astype(int)
    red = (img[..., 0] > 140) & (img[..., 1] < 90) & (img[..., 2] < 90)
    s = TINY.image_size
    cx, cy, rad = obj["x"] * s, obj["y"] * s, obj["r"] * s
    yy, xx = np.mgrid[0:s, 0:s]
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= (0.5 * rad) ** 2
    assert red[inside].mean() > 0.6
    ys, xs = np.nonzero(red)
    assert abs(xs.mean() - cx) < 0.5 * rad + 1 and abs(ys.mean() - cy) < 0.5 * rad + 1


def test_render_worker_failure_is_reported(tmp_path: Path):
    cfg = SynthVTRConfig(num_families=3, family_size=4, test_families=1, image_size=32, num_frames=8,
                         preset="no-such-preset")
    with pytest.raises(RuntimeError, match="render worker"):
        generate_synthvtr(tmp_path, cfg, workers=2, progress=False)
    assert not is_complete(tmp_path, cfg)


def test_mp4_bytes_repeat_and_colours_survive_the_round_trip(tmp_path: Path):
    """Encoding the same frames again gives the same file (with swscale's RGB -> yuv420p it did not always: that
    conversion is now done in numpy), and the numpy BT.601 conversion decodes back to the rendered colours."""
    import hashlib

    av = pytest.importorskip("av")
    from datamodules.synthvtr.render import rgb_to_yuv420p

    spec = VideoSpec("synth99999", 0, 0, 0, "test", "grass", (ObjectSpec("red", "square", "static", (0.3, 0.6)),),
                     EventSpec("change", 0, 0.9, "blue"), render_seed=1)
    frames = render_frames(spec, TINY)
    digests = set()
    for i in range(25):
        write_mp4(frames, tmp_path / f"v{i}.mp4", TINY.fps)
        digests.add(hashlib.sha256((tmp_path / f"v{i}.mp4").read_bytes()).hexdigest())
    assert len(digests) == 1
    # conversion alone (no codec): decoding our yuv420p with FFmpeg's BT.601 gives the frame back, up to rounding
    # and the 2 x 2 chroma averaging (so compare on a frame without sharp colour edges: a smooth gradient)
    yy, xx = np.mgrid[0:32, 0:32]
    smooth = np.stack([xx * 6, yy * 6, (xx + yy) * 3], -1).astype(np.uint8)
    back = av.VideoFrame.from_ndarray(rgb_to_yuv420p(smooth), format="yuv420p").to_ndarray(format="rgb24")
    assert np.abs(back.astype(int) - smooth.astype(int)).max() <= 6


# Generates SynthVTR in a fresh interpreter. ``--asm 0`` makes x264 run without any SIMD code (what it does on a CPU
# that lacks the instruction sets it detected here, by wrapping ``av.open`` so that every libx264 stream gets
# ``asm=0`` appended to its x264-params); ``--workers 1`` renders in that process, so the wrapper applies.
_GENERATE = r"""
import json, sys
import av
from datamodules.synthvtr import SynthVTRConfig, generate_synthvtr

out, config, workers, asm = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if asm != "auto":
    real_open = av.open

    class Forced:
        def __init__(self, container):
            self.container = container

        def __getattr__(self, name):
            return getattr(self.container, name)

        def __enter__(self):
            self.container.__enter__()
            return self

        def __exit__(self, *exc):
            return self.container.__exit__(*exc)

        def add_stream(self, codec, rate=None, options=None, **kwargs):
            options = dict(options or {})
            if codec == "libx264":
                options["x264-params"] = ":".join(p for p in (options.get("x264-params"), f"asm={asm}") if p)
            return self.container.add_stream(codec, rate=rate, options=options, **kwargs)

    def forced_open(*args, **kwargs):
        container = real_open(*args, **kwargs)
        return Forced(container) if kwargs.get("mode") == "w" else container

    av.open = forced_open
generate_synthvtr(out, SynthVTRConfig(**config), workers=workers, progress=False)
"""


def _generate_in_process(out: Path, config: SynthVTRConfig, workers: int, asm: str, threads: int) -> None:
    import dataclasses
    import json
    import os
    import subprocess
    import sys

    from tests.run_helpers import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-c", _GENERATE, str(out), json.dumps(dataclasses.asdict(config)), str(workers),
                    asm], cwd=REPO, env=env, check=True, timeout=300)


def test_two_generations_in_separate_processes_are_byte_identical(tmp_path: Path):
    """One generation renders in its own process with one BLAS thread and x264 kept off every SIMD path (as on
    another CPU); the other renders in two worker processes (each encodes another sequence of videos) with two BLAS
    threads and x264's detected instruction sets. Every file is the same bytes (x264's CPU- and history-dependent
    routines made most of these videos differ before ``X264_PARAMS`` set cpu-independent), and so are the manifests
    and content digests."""
    import json

    config = SynthVTRConfig(num_families=6, family_size=4, test_families=2, image_size=32, num_frames=8)
    _generate_in_process(tmp_path / "a", config, workers=1, asm="0", threads=1)
    _generate_in_process(tmp_path / "b", config, workers=2, asm="auto", threads=2)
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b").as_posix() for p in (tmp_path / "b").rglob("*")
                           if p.is_file())
    videos = [f for f in files if f.endswith(".mp4")]
    assert len(videos) == config.num_videos
    differ = [f for f in files if f != "synthvtr/generation.json"  # timings and worker count differ by design
              and (tmp_path / "a" / f).read_bytes() != (tmp_path / "b" / f).read_bytes()]
    assert differ == [], f"{len(differ)} of {len(files)} files differ, e.g. {differ[:5]}"
    gen_a, gen_b = (json.loads((tmp_path / d / "synthvtr" / "generation.json").read_text()) for d in "ab")
    assert gen_a["content_sha256"] == gen_b["content_sha256"]
    assert gen_a["timings"]["workers"] == 1 and gen_b["timings"]["workers"] == 2
