"""Video readers behind one interface, and the frame-sampling rule they share.

Readers are opened inside ``__getitem__`` (decord's ``VideoReader`` is not picklable, and one open
file per worker is what we want anyway). They return ``uint8 [T, 3, S, S]`` tensors: the short side
resized to ``S`` and centre-cropped, as CLIP preprocessing does. A video that cannot be decoded raises
``VideoDecodeError`` naming the file: it is never replaced by zeros.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SamplingMode = Literal["uniform", "random_offset"]
ReaderName = Literal["decord", "pyav", "frames"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".3gp", ".mpg", ".mpeg", ".flv")


class VideoDecodeError(RuntimeError):
    """A video file exists but could not be decoded."""


def sample_frame_indices(num_available: int, num_frames: int, mode: SamplingMode,
                         rng: np.random.Generator | None = None) -> np.ndarray:
    """Pick ``min(num_frames, num_available)`` frame indices in temporal order.

    The clip is cut into ``num_frames`` equal segments. ``uniform`` takes each segment's centre
    (deterministic, used at evaluation and by the feature cache); ``random_offset`` takes a random
    frame inside each segment (training augmentation, TSN-style). Videos shorter than ``num_frames``
    return every frame; the caller pads and masks.
    """
    if num_available <= 0:
        raise ValueError("cannot sample frames from a video with 0 frames")
    if num_available <= num_frames:
        return np.arange(num_available)
    edges = np.linspace(0, num_available, num_frames + 1)
    if mode == "uniform":
        idx = np.floor((edges[:-1] + edges[1:]) / 2)
    elif mode == "random_offset":
        # integer segment bounds, so neighbouring segments never pick the same frame
        bounds = np.floor(edges).astype(np.int64)
        rng = rng if rng is not None else np.random.default_rng()
        idx = bounds[:-1] + np.floor(rng.random(num_frames) * (bounds[1:] - bounds[:-1]))
    else:
        raise ValueError(f"unknown sampling mode {mode!r}; use 'uniform' or 'random_offset'")
    return np.clip(idx.astype(np.int64), 0, num_available - 1)


def resize_center_crop(frames: Tensor, size: int) -> Tensor:
    """``uint8 [T, H, W, 3]`` -> ``uint8 [T, 3, size, size]`` (short side to ``size``, centre crop)."""
    x = frames.permute(0, 3, 1, 2)
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x.float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[..., top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8)
    return x.contiguous()


class VideoReader(ABC):
    """Reads ``num_frames`` frames of one video as ``uint8 [T, 3, S, S]``."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    @abstractmethod
    def num_frames(self, path: Path) -> int:
        """Total decodable frames (used by the manifest and sampling)."""

    @abstractmethod
    def read(self, path: Path, indices_fn: object) -> Tensor:
        """Decode the frames chosen by ``indices_fn(num_available) -> np.ndarray``."""

    def __call__(self, path: Path, num_frames: int, mode: SamplingMode,
                 rng: np.random.Generator | None = None) -> Tensor:
        return self.read_sampled(path, num_frames, mode, rng)[0]

    def read_sampled(self, path: Path, num_frames: int, mode: SamplingMode,
                     rng: np.random.Generator | None = None) -> tuple[Tensor, np.ndarray]:
        """Frames and the frame indices they were sampled at (aux narration is aligned to these)."""
        chosen: list[np.ndarray] = []

        def choose(n: int) -> np.ndarray:
            chosen.append(sample_frame_indices(n, num_frames, mode, rng))
            return chosen[-1]

        try:
            frames = self.read(path, choose)
        except VideoDecodeError:
            raise
        except FileNotFoundError:
            raise
        except Exception as exc:  # decoder libraries raise many types; name the file either way
            raise VideoDecodeError(f"could not decode {path}: {type(exc).__name__}: {exc}") from exc
        return frames, chosen[-1]


class DecordReader(VideoReader):
    """decord, one thread per DataLoader worker (the CLIP4Clip-family default)."""

    def num_frames(self, path: Path) -> int:
        import decord

        return len(decord.VideoReader(str(path), num_threads=1))

    def read(self, path: Path, indices_fn: object) -> Tensor:
        import decord

        if not path.is_file():
            raise FileNotFoundError(f"video file not found: {path}")
        vr = decord.VideoReader(str(path), num_threads=1)
        idx = indices_fn(len(vr))  # type: ignore[operator]
        frames = torch.from_numpy(vr.get_batch(idx.tolist()).asnumpy())
        return resize_center_crop(frames, self.image_size)


class PyAVReader(VideoReader):
    """PyAV fallback: decodes sequentially (slower than decord for sparse sampling, always available)."""

    def num_frames(self, path: Path) -> int:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for _ in container.decode(stream))

    def read(self, path: Path, indices_fn: object) -> Tensor:
        import av

        if not path.is_file():
            raise FileNotFoundError(f"video file not found: {path}")
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        if not decoded:
            raise VideoDecodeError(f"no frames decoded from {path}")
        idx = indices_fn(len(decoded))  # type: ignore[operator]
        frames = torch.from_numpy(np.stack([decoded[i] for i in idx]))
        return resize_center_crop(frames, self.image_size)


_FRAME_NUMBER = re.compile(r"(\d+)")


class FrameFolderReader(VideoReader):
    """Pre-extracted frames: ``<video_dir>/<video_id>/*.jpg`` ordered by the integer in the name."""

    def _frames(self, path: Path) -> list[Path]:
        folder = path.with_suffix("") if path.suffix.lower() in VIDEO_EXTENSIONS else path
        if not folder.is_dir():
            raise FileNotFoundError(
                f"frame folder not found: {folder} (reader 'frames' expects <video_dir>/<video_id>/*.jpg)")
        files = [p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
        if not files:
            raise VideoDecodeError(f"frame folder {folder} has no .jpg/.png frames")

        def key(p: Path) -> tuple[int, str]:
            m = _FRAME_NUMBER.findall(p.stem)
            return (int(m[-1]) if m else -1, p.name)

        return sorted(files, key=key)

    def num_frames(self, path: Path) -> int:
        return len(self._frames(path))

    def read(self, path: Path, indices_fn: object) -> Tensor:
        from PIL import Image

        files = self._frames(path)
        idx = indices_fn(len(files))  # type: ignore[operator]
        frames = torch.from_numpy(np.stack([np.asarray(Image.open(files[i]).convert("RGB")) for i in idx]))
        return resize_center_crop(frames, self.image_size)


def build_reader(name: ReaderName, image_size: int) -> VideoReader:
    """Reader by config name."""
    readers: dict[str, type[VideoReader]] = {"decord": DecordReader, "pyav": PyAVReader,
                                              "frames": FrameFolderReader}
    if name not in readers:
        raise ValueError(f"unknown reader {name!r}; choose one of {sorted(readers)}")
    return readers[name](image_size)
