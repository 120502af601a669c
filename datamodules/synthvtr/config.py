"""The generator's settings (:class:`SynthVTRConfig`) and the fingerprint that names a generated dataset."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from datamodules.synthvtr.lexicon import ASPECTS, MUTATIONS

# Enters every fingerprint: bump it when a change alters what a given config generates.
# 1.1: repeatable colour conversion (render.rgb_to_yuv420p); 1.2: CPU-independent x264 and no FFmpeg version string
# in the mp4 (render.X264_PARAMS, render.MP4_OPTIONS), so the videos are the same bytes on every machine
GENERATOR_VERSION = "synthvtr-1.2"
# Knobs added after a version was released, with the value that reproduces what that version generated: they
# enter the fingerprint only when set to something else, so existing datasets and caches keep their names.
_LATER_KNOBS: dict[str, object] = {"one_sided_fraction": 0.0}
# The aspects that describe one side of the mid-video event only: what is there at the start / at the end.
ONE_SIDED_ASPECTS: dict[str, str] = {"before": "start_scene", "after": "end_state"}


@dataclass
class SynthVTRConfig:
    """All knobs of the generator. Every field enters :meth:`fingerprint`.

    The first block sets the size of the benchmark and of its videos; the rest are difficulty knobs
    (``object_radius`` and ``motion_amplitude`` as fractions of the frame side, the event window as a
    fraction of the clip, the allowed mutation kinds and caption aspects) and the encoder settings.

    ``detail`` sets how many aspects a caption joins. By default (``distinct_aspects=False``) a caption
    makes ``detail`` aspect draws *with replacement* and merges repeats, which gives these ceilings at the
    default size (seeds 0-2: oracle R@1 ~ 37 / 63 / 76 at detail 1 / 2 / 3). With
    ``distinct_aspects=True`` every caption has exactly ``detail`` distinct aspects (~ 37 / 69 / 83).

    ``one_sided_fraction`` is the probability that a caption describes only one side of the event: the
    start of the video (``start_scene``) or its end (``end_state``), one side picked at random, instead of
    ``detail`` aspects drawn from ``aspects`` (0, the default, never; such captions say nothing about the
    event, the motions or the other half, so they cannot tell a family's mutants apart).
    """

    num_families: int = 200
    family_size: int = 4
    test_families: int = 40
    image_size: int = 112
    num_frames: int = 32
    fps: int = 8
    captions_per_video: int = 5
    detail: int = 2
    min_objects: int = 1
    max_objects: int = 3
    seed: int = 0
    object_radius: float = 0.11
    motion_amplitude: float = 0.45
    event_window: tuple[float, float] = (0.4, 0.6)
    mutations: tuple[str, ...] = MUTATIONS
    aspects: tuple[str, ...] = ASPECTS
    distinct_aspects: bool = False
    crf: int = 23
    preset: str = "veryfast"
    one_sided_fraction: float = 0.0

    def __post_init__(self) -> None:
        # jsonargparse / YAML hand us lists; tuples keep the fingerprint stable.
        self.event_window = tuple(float(v) for v in self.event_window)  # type: ignore[assignment]
        self.mutations = tuple(self.mutations)
        self.aspects = tuple(self.aspects)
        problems = []
        if self.num_families < 1 or self.family_size < 1:
            problems.append("num_families and family_size must be >= 1")
        if not 0 <= self.test_families <= self.num_families:
            problems.append("test_families must be in [0, num_families]")
        if self.image_size < 16 or self.image_size % 2:
            problems.append("image_size must be even and >= 16 (yuv420p)")
        if self.num_frames < 4 or self.fps < 1:
            problems.append("num_frames must be >= 4 and fps >= 1")
        if not 1 <= self.min_objects <= self.max_objects <= 4:
            problems.append("need 1 <= min_objects <= max_objects <= 4")
        if self.captions_per_video < 1:
            problems.append("captions_per_video must be >= 1")
        if not 1 <= self.detail <= len(self.aspects):
            problems.append(f"detail must be in [1, {len(self.aspects)}] (number of aspects)")
        if bad := [m for m in self.mutations if m not in MUTATIONS]:
            problems.append(f"unknown mutations {bad}; choose from {MUTATIONS}")
        if self.family_size > 1 and not self.mutations:
            problems.append("family_size > 1 needs at least one mutation kind")
        if bad := [a for a in self.aspects if a not in ASPECTS]:
            problems.append(f"unknown aspects {bad}; choose from {ASPECTS}")
        if not self.aspects:
            problems.append("need at least one caption aspect")
        self.one_sided_fraction = float(self.one_sided_fraction)
        if not 0.0 <= self.one_sided_fraction <= 1.0:
            problems.append("one_sided_fraction must be in [0, 1]")
        elif self.one_sided_fraction > 0 and not self.one_sided_aspects():
            problems.append(f"one_sided_fraction > 0 needs {' or '.join(ONE_SIDED_ASPECTS.values())} in aspects")
        lo, hi = self.event_window if len(self.event_window) == 2 else (-1.0, -1.0)
        if not 0.0 < lo <= hi < 1.0:
            problems.append("event_window must be (lo, hi) with 0 < lo <= hi < 1")
        if not 0.02 <= self.object_radius <= 0.2 or not 0.0 <= self.motion_amplitude <= 0.6:
            problems.append("object_radius must be in [0.02, 0.2] and motion_amplitude in [0, 0.6]")
        if problems:
            raise ValueError("invalid SynthVTRConfig: " + "; ".join(problems))

    @property
    def num_videos(self) -> int:
        return self.num_families * self.family_size

    def one_sided_aspects(self) -> tuple[str, ...]:
        """The one-sided aspects (``start_scene``, ``end_state``) among ``aspects``, in that order."""
        return tuple(a for a in ONE_SIDED_ASPECTS.values() if a in self.aspects)

    def fingerprint(self) -> str:
        """Short sha of every parameter plus the generator version: the identity of a generated dataset.

        A knob added later (``_LATER_KNOBS``) enters only when it differs from the value that reproduces the
        older output, so a config that does not use it keeps its fingerprint.
        """
        params = {k: v for k, v in asdict(self).items() if k not in _LATER_KNOBS or v != _LATER_KNOBS[k]}
        payload = json.dumps({"version": GENERATOR_VERSION, **params}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]
