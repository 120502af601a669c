"""SynthVTRConfig: validation and the fingerprint that names a generated dataset."""

from __future__ import annotations

import pytest

from datamodules.synthvtr import SynthVTRConfig


def test_config_validation_and_fingerprint():
    assert SynthVTRConfig().fingerprint() == SynthVTRConfig().fingerprint()
    assert SynthVTRConfig(mutations=["colour", "shape"]).mutations == ("colour", "shape")  # type: ignore[arg-type]
    assert SynthVTRConfig(detail=3).fingerprint() != SynthVTRConfig().fingerprint()
    for bad in ({"image_size": 63}, {"detail": 0}, {"test_families": 300}, {"mutations": ("nope",)},
                {"max_objects": 5}, {"event_window": (0.7, 0.2)}):
        with pytest.raises(ValueError):
            SynthVTRConfig(**bad)  # type: ignore[arg-type]


def test_default_fingerprint_is_stable():
    """Generated data (``data/synthvtr-<fingerprint>``) and its feature caches are found by this name:
    a change here orphans them, so it must come with a GENERATOR_VERSION bump on purpose."""
    assert SynthVTRConfig().fingerprint() == "d3ebc07c4f36"  # synthvtr-1.2 (synthvtr-1.1: 17e3cddeb0c2)
