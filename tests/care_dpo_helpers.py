"""The tiny SynthVTR as CaRe-DPO's data stages read it, for the tests of tests/experiments/care_dpo/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datamodules import SynthVTR
from tests.caption_helpers import TINY_SYNTH


def synthvtr_data(root: Path, **overrides: Any) -> SynthVTR:
    """The tiny SynthVTR under ``root`` with the feature cache on (the predict-only settings left out)."""
    settings = {k: v for k, v in TINY_SYNTH.items() if not k.startswith("predict") and k != "video_dir"}
    return SynthVTR(root=str(root), **{"feature_cache": True, **settings, **overrides})
