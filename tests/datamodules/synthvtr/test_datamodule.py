"""datamodules.synthvtr.datamodule: SynthVTR, the embedded benchmark served through the MSR-VTT reading path; where
its copy lives and how it validates. Generating and fitting on it run in tests/datamodules/synthvtr/test_config_hard.py
and tests/test_pipeline.py."""

from __future__ import annotations

from pathlib import Path

from datamodules.synthvtr import SynthVTRConfig
from datamodules.synthvtr.datamodule import SynthVTR


def test_datamodules_still_exports_synthvtr():
    import datamodules
    from datamodules.base import VideoTextDataModule
    from datamodules.synthvtr.datamodule import SynthVTR

    assert datamodules.SynthVTR is SynthVTR and issubclass(SynthVTR, VideoTextDataModule)


def test_the_copy_is_named_by_the_generator_fingerprint_and_validation_holds_out_whole_families(tmp_path: Path) -> None:
    dm = SynthVTR(root=str(tmp_path), num_families=12, family_size=3, test_families=4, val_families=2,
                  video_size=32, video_frames=8, generator_seed=5, num_workers=0)
    config = SynthVTRConfig(num_families=12, family_size=3, test_families=4, image_size=32, num_frames=8, seed=5)
    assert dm.generator_config == config
    assert dm.root == tmp_path / f"synthvtr-{config.fingerprint()}"
    assert dm.val_videos == 2 * 3 and dm.val_protocol == "heldout"
    assert not dm.root.exists()  # nothing is generated before prepare_data
