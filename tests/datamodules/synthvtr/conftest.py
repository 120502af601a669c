"""The tiny SynthVTR shared by the generator tests: 6 families of 4, 2 test families, 64 px, 16 frames.

Generated once per session (in-process, one worker), in a couple of seconds on two cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datamodules.synthvtr import SynthVTRConfig, generate_synthvtr

TINY = SynthVTRConfig(num_families=6, family_size=4, test_families=2, image_size=64, num_frames=16)
N_VIDEOS, N_TEST = 24, 8


def read_specs(root: Path) -> list[dict[str, Any]]:
    """The rows of ``synthvtr/specs.jsonl``."""
    return [json.loads(line) for line in (root / "synthvtr" / "specs.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthvtr(tmp_path_factory.mktemp("synth") / "a", TINY, workers=1, progress=False)
