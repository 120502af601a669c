"""SynthVTR: an embedded, fully synthetic text-video retrieval benchmark (the generator).

Why it exists: the real benchmarks (MSR-VTT, MSVD, ...) need hours of downloading and decoding and a GPU
before a single number comes out. SynthVTR writes a small benchmark in well under a minute on two CPU
cores, with a *known* difficulty: every caption records the facts it asserts, so the ambiguity of the
captions sets a computable retrieval ceiling (the oracle), and every test video has near-duplicate hard
negatives. It is written in the MSR-VTT (CLIP4Clip) layout so the real MSR-VTT reading path is exercised.
docs/data/synthvtr.md, describes it; the modules, by concern:

* ``lexicon``: backgrounds, shapes, colours, motions, events and the synonyms captions use for them.
* ``config``: :class:`SynthVTRConfig` (every knob) and its fingerprint, the identity of a dataset.
* ``specs``: :class:`VideoSpec` and the families of near-duplicates (a base and one-attribute mutants).
* ``captions``: per-frame metadata (for the simulated captioner), each video's facts, template captions.
* ``oracle``: the in-memory benchmark (:func:`build_synthvtr`) and the ceiling R@K (:func:`oracle_recall`).
* ``render``: frames drawn with PIL on numpy, H.264 mp4 written with PyAV, parallel render workers.
* ``store``: :func:`generate_synthvtr` (idempotent, crash-safe, with a sha256 manifest), :func:`verify_content`
  (a copy against its manifest) and the ``load_*`` readers.
* ``cli``: ``python -m datamodules.synthvtr --help``.

Everything is deterministic from ``SynthVTRConfig.seed``. The generator needs only numpy, PIL and PyAV
(tqdm optional) and never imports torch or lightning; the LightningDataModule that serves the benchmark,
``SynthVTR``, lives in ``datamodules/synthvtr/datamodule.py`` and is exported by ``datamodules``.
"""

from datamodules.synthvtr.config import GENERATOR_VERSION, SynthVTRConfig
from datamodules.synthvtr.lexicon import (
    BACKGROUNDS,
    COLOUR_WORDS,
    COLOURS,
    EVENTS,
    MOTION_WORDS,
    MOTIONS,
    SCENE_NOUNS,
    SCENE_WORDS,
    SHAPE_WORDS,
    SHAPES,
)
from datamodules.synthvtr.oracle import CaptionFacts, SynthVTRData, build_synthvtr, oracle_recall
from datamodules.synthvtr.specs import EventSpec, ObjectSpec, VideoSpec
from datamodules.synthvtr.store import (
    ANNOTATION_FILES,
    MANIFEST,
    ContentCheck,
    content_files,
    generate_synthvtr,
    is_complete,
    load_caption_facts,
    load_frame_metadata,
    load_specs,
    load_video_facts,
    verify_content,
    write_manifest,
)

__all__ = [
    "ANNOTATION_FILES",
    "BACKGROUNDS",
    "COLOURS",
    "COLOUR_WORDS",
    "EVENTS",
    "GENERATOR_VERSION",
    "MANIFEST",
    "MOTIONS",
    "MOTION_WORDS",
    "SCENE_NOUNS",
    "SCENE_WORDS",
    "SHAPES",
    "SHAPE_WORDS",
    "CaptionFacts",
    "ContentCheck",
    "EventSpec",
    "ObjectSpec",
    "SynthVTRConfig",
    "SynthVTRData",
    "VideoSpec",
    "build_synthvtr",
    "content_files",
    "generate_synthvtr",
    "is_complete",
    "load_caption_facts",
    "load_frame_metadata",
    "load_specs",
    "load_video_facts",
    "oracle_recall",
    "verify_content",
    "write_manifest",
]
