"""Pixels: procedural backgrounds and objects drawn with PIL on numpy, written as H.264 mp4 with PyAV.

:func:`render_frames` draws a video from its spec (textures from numpy ``default_rng(render_seed)``, the
objects' states from ``datamodules/synthvtr/specs.py``, the same states :func:`frame_metadata
<datamodules.synthvtr.captions.frame_metadata>` records); :func:`write_mp4` encodes it with single-threaded,
CPU-independent libx264 (:data:`X264_PARAMS`); :func:`render_all` spreads the videos over worker subprocesses. Needs
numpy, PIL and PyAV only.
"""

from __future__ import annotations

import json
import math
import os
import re
import selectors
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from datamodules.synthvtr.config import SynthVTRConfig
from datamodules.synthvtr.lexicon import COLOUR_RGB
from datamodules.synthvtr.specs import VideoSpec, clip_time, object_state, trajectory

# Unit polygons (y down), scaled by the radius; sizes chosen so that shapes look about equally big.
_UNIT_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)],
    "triangle": [(0.0, -1.15), (1.0, 0.58), (-1.0, 0.58)],
    "diamond": [(0.0, -1.15), (0.68, 0.0), (0.0, 1.15), (-0.68, 0.0)],  # narrow, so not a turned square
    "star": [
        (math.cos(math.pi * (k / 5 - 0.5)) * (1.15 if k % 2 == 0 else 0.5),
         math.sin(math.pi * (k / 5 - 0.5)) * (1.15 if k % 2 == 0 else 0.5))
        for k in range(10)
    ],
}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a ``cells`` x ``cells`` grid bilinearly upsampled to ``size``."""
    grid = rng.uniform(-1, 1, (cells + 1, cells + 1))
    pos = np.linspace(0, cells, size, endpoint=False)
    i0 = pos.astype(int)
    w = pos - i0
    rows = grid[i0] * (1 - w)[:, None] + grid[i0 + 1] * w[:, None]
    return rows[:, i0] * (1 - w)[None, :] + rows[:, i0 + 1] * w[None, :]


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0, 255).astype(np.uint8)


def _background_static(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A procedural background texture (float HxWx3). Water is animated separately."""
    s = size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) / s
    noise = rng.normal(0, 1, (s, s))
    if kind == "grass":
        blade = max(2, s // 14)
        streaks = np.repeat(rng.normal(0, 1, (s // blade + 2, s)), blade, axis=0)
        offs = rng.integers(0, blade, s)
        streaks = streaks[(np.arange(s)[:, None] + offs[None, :]), np.arange(s)[None, :]]
        shade = 6 * noise + 16 * streaks + 14 * _smooth_noise(rng, s, 3) + 12 * (yy - 0.5)
        return np.array([65.0, 135.0, 50.0]) + shade[..., None] * np.array([0.55, 1.0, 0.45])
    if kind == "snow":
        shade = 3 * noise + 7 * _smooth_noise(rng, s, 4) - 10 * (rng.random((s, s)) < 0.02)
        return np.array([234.0, 238.0, 246.0]) + shade[..., None] * np.array([1.0, 1.0, 0.7])
    if kind == "night":
        top, bottom = np.array([8.0, 10.0, 32.0]), np.array([30.0, 30.0, 70.0])
        img = top + (bottom - top) * yy[..., None] + 2 * noise[..., None]
        stars = (rng.random((s, s)) < 0.004) & (yy < 0.85)
        img[stars] = rng.uniform(170, 255, (int(stars.sum()), 1))
        return img
    if kind == "indoor":
        n_planks = int(rng.integers(5, 8))
        plank = np.minimum((yy * n_planks).astype(int), n_planks - 1)
        tones = rng.uniform(0.8, 1.15, n_planks)[plank]
        wobble = 0.25 * _smooth_noise(rng, s, 5)
        grain = 10 * np.sin(2 * np.pi * (xx * rng.uniform(2, 5) + wobble + plank * 0.37))
        img = np.array([150.0, 104.0, 62.0]) * tones[..., None] + (grain + 4 * noise)[..., None]
        seam = (yy * n_planks) % 1.0 < max(1.0 / s * n_planks, 0.04)
        joints = rng.uniform(0.1, 0.9, n_planks)[plank]
        seam |= np.abs(xx - joints) < 0.6 / s + 0.004
        img[seam] *= 0.45
        return img
    if kind == "sand":
        f, g = rng.uniform(3, 5), rng.uniform(1, 2)
        dunes = np.sin(2 * np.pi * (yy * f + 0.15 * np.sin(2 * np.pi * xx * g + rng.uniform(0, 6.3))
                                    + rng.uniform(0, 1)))
        shade = 20 * dunes + 5 * noise
        return np.array([218.0, 188.0, 132.0]) + shade[..., None] * np.array([1.0, 0.9, 0.75])
    raise ValueError(f"unknown background {kind!r}")


class _Water:
    """Sinusoidal waves whose phase moves with time (the one animated background)."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
        self.arg = 2 * np.pi * (yy * rng.uniform(4, 7) + 0.08 * np.sin(2 * np.pi * xx * rng.uniform(1, 3)
                                                                        + rng.uniform(0, 6.3)))
        self.noise = 3 * rng.normal(0, 1, (size, size))

    def frame(self, u: float) -> np.ndarray:
        wave = np.sin(self.arg - 2 * np.pi * 1.5 * u)
        shade = 18 * wave + 30 * (wave > 0.92) + self.noise
        return _to_uint8(np.array([35.0, 95.0, 175.0]) + shade[..., None] * np.array([0.8, 0.9, 1.0]))


def _outline(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """A darker (or, for black, lighter) rim so that objects stay visible on same-coloured backgrounds."""
    if sum(rgb) < 100:
        return (90, 90, 90)
    return tuple(int(v * 0.55) for v in rgb)  # type: ignore[return-value]


def _draw_object(draw: ImageDraw.ImageDraw, shape: str, colour: str, x: float, y: float, r: float,
                 angle: float, size: int) -> None:
    cx, cy, rad = x * size, y * size, r * size
    fill = COLOUR_RGB[colour]
    width = max(1, size // 64)
    if shape == "circle":
        draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad], fill=fill, outline=_outline(fill), width=width)
        return
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    pts = [(cx + rad * (px * ca - py * sa), cy + rad * (px * sa + py * ca))
           for px, py in _UNIT_POLYGONS[shape]]
    draw.polygon(pts, fill=fill, outline=_outline(fill), width=width)


def render_frames(spec: VideoSpec, config: SynthVTRConfig) -> np.ndarray:
    """``[num_frames, S, S, 3]`` uint8 RGB frames; deterministic from the spec's ``render_seed``."""
    size, n = config.image_size, config.num_frames
    rng = np.random.default_rng(spec.render_seed)
    water = _Water(size, rng) if spec.background == "water" else None
    static = None if water else Image.fromarray(_to_uint8(_background_static(spec.background, size, rng)))
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for f in range(n):
        u = clip_time(f, n)
        img = Image.fromarray(water.frame(u)) if water else static.copy()  # type: ignore[union-attr]
        draw = ImageDraw.Draw(img)
        for i, o in enumerate(spec.objects):
            visible, colour = object_state(spec, i, u)
            if visible:
                x, y, r, angle = trajectory(o, u, config.object_radius, config.motion_amplitude)
                _draw_object(draw, o.shape, colour, x, y, r, angle, size)
        out[f] = np.asarray(img)
    return out


# BT.601 limited-range RGB -> YCbCr (rows: Y, Cb, Cr), the conversion FFmpeg applies to untagged RGB input
_BT601 = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
_BT601_OFFSET = np.array([16.0, 128.0, 128.0])


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB -> the ``[H * 3 / 2, W]`` uint8 planar yuv420p layout PyAV takes.

    Done here rather than by FFmpeg's swscale, whose RGB -> yuv420p conversion is not repeatable: the same frame
    converted 300 times in one process gave 2-3 different outputs (FFmpeg 8 / swscale 9.5 through PyAV 18), so
    ~11 % of SynthVTR's videos came out different from one generation to the next. Chroma is the mean of each
    2 x 2 block (H and W are even: ``SynthVTRConfig`` checks it).
    """
    h, w, _ = frame.shape
    ycc = frame.astype(np.float64) @ _BT601.T + _BT601_OFFSET
    chroma = ycc[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    planes = [ycc[..., 0], chroma[..., 0], chroma[..., 1]]
    return np.concatenate([np.clip(np.rint(p), 0, 255).astype(np.uint8).reshape(-1, w) for p in planes])


# x264 settings that make the bitstream a function of the frames and the settings alone (synthvtr-1.2):
# * cpu-independent: otherwise x264 runs its mbtree propagation and 9-way intra search in code chosen by the CPU's
#   instruction sets, and the choices encode differently (same yuv frames of 200 demo videos: AVX2 or SSE4.2 instead
#   of the detected AVX-512 changed 57 files, no SIMD all 200); with the AVX-512 code a video's bytes also depended on
#   what the process had encoded before it (reverse order changed 2 of 60). With cpu-independent=1 every instruction
#   set and every order gave the same bytes (docs/data/synthvtr.md).
# * one thread, no lookahead or slice threads: x264 threads change its decisions (2 or 4 threads: 22 and 30 of 200
#   files); the generator runs one encoder per worker process instead.
X264_PARAMS = "cpu-independent=1:threads=1:lookahead-threads=1:sliced-threads=0"
# The muxer's bitexact mode leaves FFmpeg's version string ("Lavf62.12.102") out of the file, so an FFmpeg update
# that keeps x264's output keeps the files. The container carries no creation time (mvhd/tkhd/mdhd times are 0).
MP4_OPTIONS = {"fflags": "+bitexact"}


def write_mp4(frames: np.ndarray, path: str | Path, fps: int, crf: int = 23,
              preset: str = "veryfast") -> None:
    """Encode RGB frames as H.264 (libx264, yuv420p) into ``path``, atomically (tmp file + rename).

    Repeatable byte for byte across processes, machines and time (for a given x264 build, which
    ``generation.json`` records): the colour conversion is :func:`rgb_to_yuv420p` (not swscale), and x264 runs
    with :data:`X264_PARAMS` (one thread, no CPU-dependent algorithm choice).
    """
    import av  # local: the specs-only path should not pay for it

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        _encode(av, frames, str(tmp), fps, crf, preset)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left there when encoding or the rename failed


def _encode(av: Any, frames: np.ndarray, target: Any, fps: int, crf: int, preset: str) -> None:
    """Write ``frames`` as an mp4 to ``target`` (a path or a binary file object)."""
    _, height, width, _ = frames.shape
    with av.open(target, mode="w", format="mp4", options=dict(MP4_OPTIONS)) as container:
        stream = container.add_stream("libx264", rate=fps, options={
            "crf": str(crf), "preset": preset, "threads": "1", "x264-params": X264_PARAMS})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for arr in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb_to_yuv420p(arr), format="yuv420p")))
        container.mux(stream.encode(None))


def encoder_identity() -> dict[str, Any]:
    """What decides the mp4 bytes besides the frames and the config: PyAV, FFmpeg's libraries, x264's build.

    The files are byte-identical across machines for one x264 build (``X264_PARAMS``); another build may encode
    differently, so ``generation.json`` records this and a mismatch with the manifest can be told apart from a
    corrupted copy. x264 names its build only inside the stream (its version SEI), so a 2-frame clip is encoded.
    """
    import io

    import av

    buf = io.BytesIO()
    _encode(av, np.zeros((2, 16, 16, 3), dtype=np.uint8), buf, 8, 23, "veryfast")
    found = re.search(rb"x264 - core (\d+)( r\d+ [0-9a-f]+)?", buf.getvalue())
    return {"pyav": av.__version__,
            "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "libavformat": ".".join(map(str, av.library_versions["libavformat"])),
            "x264": found.group(0).decode() if found else "unknown",
            "x264_params": X264_PARAMS, "mp4_options": dict(MP4_OPTIONS)}


def render_videos(specs: list[VideoSpec], video_dir: str,
                  config: SynthVTRConfig) -> list[tuple[float, float]]:
    """Render and write each video; returns (render, encode) *CPU* seconds per video.

    CPU time (everything here is single-threaded) rather than wall time, so that the cost per video
    reported in ``generation.json`` does not depend on how busy the machine was.
    """
    times = []
    for spec in specs:
        t0 = time.process_time()
        frames = render_frames(spec, config)
        t1 = time.process_time()
        write_mp4(frames, Path(video_dir) / f"{spec.video_id}.mp4", config.fps, config.crf, config.preset)
        times.append((t1 - t0, time.process_time() - t1))
    return times


def _progress_bar(total: int, enabled: bool) -> Any:
    """A tqdm bar if tqdm is installed and wanted, else a no-op with the same ``update``/``close``."""
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, desc="SynthVTR render", unit="video", dynamic_ncols=True)
        except ImportError:
            pass

    class _Null:
        def update(self, n: int = 1) -> None:
            pass

        def close(self) -> None:
            pass

    return _Null()


# A worker prints one line per finished video: this tag, then ``[video_id, render_s, encode_s]`` as JSON.
_WORKER_TAG = "SYNTHVTR-DONE "
# The worker's entry: ``python -c _WORKER_BOOTSTRAP <job.json>``, started in the folder that holds this copy of
# ``datamodules/`` (a checkout, or site-packages): ``-c`` puts the working directory first on the import path, so the
# worker imports this very copy, not another one installed or on PYTHONPATH.
_WORKER_BOOTSTRAP = ("import sys; from datamodules.synthvtr.render import run_render_worker; "
                     "sys.exit(run_render_worker(sys.argv[1]))")
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def run_render_worker(job_path: str) -> int:
    """Render worker body: render the job's specs and report one tagged line per finished video."""
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    config = SynthVTRConfig(**job["config"])
    for d in job["specs"]:
        spec = VideoSpec.from_json(d)
        (t_render, t_encode), = render_videos([spec], job["video_dir"], config)
        # The report channel to the parent (render_all), not logging.
        sys.stdout.write(_WORKER_TAG + json.dumps([spec.video_id, t_render, t_encode]) + "\n")
        sys.stdout.flush()
    return 0


def render_all(specs: list[VideoSpec], video_dir: Path, config: SynthVTRConfig, workers: int,
               progress: bool) -> list[tuple[float, float]]:
    """Render ``specs`` in this process, or across ``workers`` subprocesses; (render, encode) CPU s each.

    Why subprocesses and not multiprocessing: forking is unsafe once the caller runs threads or CUDA (a
    Lightning run), and a spawned multiprocessing child needs an importable ``__main__``. A worker
    (``python -c _WORKER_BOOTSTRAP``) imports only ``datamodules.synthvtr`` (numpy, PIL and PyAV; the
    ``datamodules`` package loads its torch-based data modules lazily), starts in a fraction of a second
    and is safe from any parent. Videos are dealt round-robin (they all cost about the same); workers
    report each finished video on stdout.
    """
    times: list[tuple[float, float]] = []
    bar = _progress_bar(len(specs), progress)
    if workers <= 1 or len(specs) < 8:
        try:
            for spec in specs:
                times += render_videos([spec], str(video_dir), config)
                bar.update(1)
        finally:
            bar.close()
        return times
    procs: list[subprocess.Popen[bytes]] = []
    # PYTHONSAFEPATH would keep the working directory (this copy) off the worker's import path
    worker_env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    with tempfile.TemporaryDirectory(prefix="synthvtr-") as tmp:
        try:
            for k in range(min(workers, len(specs))):
                job = Path(tmp) / f"job{k}.json"
                # absolute: the worker runs in _SOURCE_ROOT, not in this process's working directory
                job.write_text(json.dumps({"config": asdict(config), "video_dir": str(Path(video_dir).resolve()),
                                           "specs": [s.to_json() for s in specs[k::workers]]}))
                with (Path(tmp) / f"job{k}.err").open("wb") as err:
                    procs.append(subprocess.Popen(
                        [sys.executable, "-c", _WORKER_BOOTSTRAP, str(job)], cwd=_SOURCE_ROOT, env=worker_env,
                        stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL))
            sel = selectors.DefaultSelector()
            pending = {}
            for p in procs:
                assert p.stdout is not None
                sel.register(p.stdout, selectors.EVENT_READ, p)
                pending[p.stdout.fileno()] = b""
            while sel.get_map():
                for key, _ in sel.select():
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    *lines, pending[key.fd] = (pending[key.fd] + chunk).split(b"\n")
                    for line in lines:
                        if line.startswith(_WORKER_TAG.encode()):
                            _, t_render, t_encode = json.loads(line[len(_WORKER_TAG):])
                            times.append((t_render, t_encode))
                            bar.update(1)
            for k, p in enumerate(procs):
                if p.wait() != 0:
                    tail = (Path(tmp) / f"job{k}.err").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"SynthVTR render worker {k} failed (exit {p.returncode}):\n{tail}")
        finally:
            bar.close()
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                if p.stdout is not None:
                    p.stdout.close()
    if len(times) != len(specs):
        raise RuntimeError(f"SynthVTR render workers reported {len(times)} of {len(specs)} videos")
    return times
