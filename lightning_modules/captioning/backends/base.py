"""The interface every caption backend implements, and helpers they share.

A backend turns :class:`CaptionRequest` objects (frames of one video, or of one frame, plus a prompt and
how many captions are wanted) into caption strings. The :class:`~lightning_modules.captioning.captioner.Captioner`
builds the requests from a predict batch (one per frame for ``narration``, one per video otherwise);
backends only generate text. A backend that holds weights (``TransformersVLM``, ``TransformersTextLM``) is
also an ``nn.Module``: it loads its weights in :meth:`CaptionBackend.setup` on the device of its rank, and
they become sub-modules of the ``Captioner`` (moved with it, visible to an optimiser). Backends without
weights (``OpenAICompatible``, ``Simulated``) are plain objects.

:class:`TextGenerator` is the text-only counterpart (ExCae's prompt engineer): chat messages in, text out.
"""

from __future__ import annotations

import base64
import io
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from datamodules.captions import CaptionKind


@dataclass
class CaptionRequest:
    """One generation job.

    Attributes:
        video_id: the dataset id of the video.
        kind: ``narration`` (this request is one frame), ``multi`` or ``supplement`` (the whole video).
        prompt: the instruction given to the captioner.
        num_captions: how many captions to return for this request.
        frame_indices: index (in the decoded video) of each frame the images come from.
        images: ``uint8 [H, W, 3]`` arrays, one per entry of ``frame_indices``; empty when the backend
            does not look at pixels (``needs_pixels`` False).
        context_text: the video's annotated text that a ``{text}`` prompt was filled with (conical embedding
            optimisation's supplement is written from the video-text pair), else None. ``prompt`` already holds
            it; backends that read ground truth instead of the prompt's words (``Simulated``) use it directly.
    """

    video_id: str
    kind: CaptionKind
    prompt: str
    num_captions: int
    frame_indices: list[int]
    images: list[np.ndarray] = field(default_factory=list)
    context_text: str | None = None


@dataclass
class CaptionOutput:
    """What a backend returns for one request: the captions, plus optional per-caption facts (lists
    aligned with ``captions``, e.g. the simulated backend's count of hallucinated slots) that the
    captioner writes into the record."""

    captions: list[str]
    extras: dict[str, list[Any]] = field(default_factory=dict)


class CaptionBackend(ABC):
    """Generates captions for requests. Subclasses set ``needs_pixels`` and implement :meth:`generate`."""

    needs_pixels: bool = True

    @property
    @abstractmethod
    def model_name(self) -> str:
        """What produced the captions (written into every record's ``model``)."""

    def setup(self, device: Any, datamodule: Any | None = None) -> None:  # noqa: B027 (optional hook)
        """Load weights / open clients on ``device``; ``datamodule`` gives access to e.g. the data root."""

    @abstractmethod
    def generate(self, requests: list[CaptionRequest]) -> list[CaptionOutput]:
        """One output per request with ``num_captions`` captions (fewer only if the model gave fewer)."""

    def record_extras(self) -> dict[str, Any]:
        """Extra keys written into every record (e.g. the simulated hallucination rate and detail)."""
        return {}

    def lineage(self) -> tuple[dict[str, Any] | None, str | None]:
        """What this backend's weights were trained on by the suite (a lineage node), or why that is unknown.

        ``(None, None)``: nothing to record (a released model or a service, trained on data outside the suite's
        splits - its own training data is not tracked)."""
        return None, None


class TextGenerator(ABC):
    """Text-only generation: chat conversations in, one completion each out."""

    @property
    @abstractmethod
    def model_name(self) -> str:
        """Identifier of the generator."""

    @abstractmethod
    def complete(self, conversations: list[list[dict[str, str]]], max_new_tokens: int | None = None,
                 temperature: float | None = None) -> list[str]:
        """One completion per conversation (``[{"role": "user", "content": "..."}]``)."""

    def __call__(self, prompt: str, system: str | None = None) -> str:
        """One user prompt -> one completion."""
        conv = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return self.complete([conv])[0]


_ITEM_PREFIX = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.):\]]|caption\s*\d{1,3}\s*[:.)-])\s*", re.IGNORECASE)


def parse_caption_list(text: str) -> list[str]:
    """Split a model's numbered / bulleted list answer into captions.

    Numbers, bullets and surrounding quotes are stripped; empty lines and preamble lines that end with a
    colon ("Here are 10 captions:") are dropped. An answer with one line yields that line.
    """
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or (line.endswith(":") and not _ITEM_PREFIX.match(line)):
            continue
        line = _ITEM_PREFIX.sub("", line).strip()
        line = line.strip("*").strip().strip('"').strip("\u201c\u201d").strip()
        if line:
            out.append(line)
    return out


def encode_image(image: np.ndarray, fmt: Literal["jpeg", "png"] = "jpeg", quality: int = 90) -> str:
    """``uint8 [H, W, 3]`` -> ``data:image/<fmt>;base64,...`` URL."""
    from PIL import Image

    buf = io.BytesIO()
    pil = Image.fromarray(np.ascontiguousarray(image))
    if fmt == "jpeg":
        pil.save(buf, format="JPEG", quality=quality)
    else:
        pil.save(buf, format="PNG")
    return f"data:image/{fmt};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def tile_grid(images: list[np.ndarray]) -> np.ndarray:
    """Frames side by side in a near-square grid (for single-image models given a whole video)."""
    n = len(images)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w, c = images[0].shape
    grid = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for k, img in enumerate(images):
        r, q = divmod(k, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = img
    return grid
