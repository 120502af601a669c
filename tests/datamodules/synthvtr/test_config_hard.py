"""One-sided captions (``SynthVTRConfig.one_sided_fraction``) and the hard configuration
``configs/data/synthvtr_hard.yaml``: same size as the default, a lower ceiling."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from datamodules.synthvtr import SynthVTRConfig
from datamodules.synthvtr.oracle import build_synthvtr
from tests.run_helpers import REPO, csv_logger

HARD_YAML = REPO / "configs" / "data" / "synthvtr_hard.yaml"

# SynthVTR argument -> SynthVTRConfig field, where the names differ
_RENAMED = {"generator_seed": "seed", "video_size": "image_size", "video_frames": "num_frames"}
_LOADER_ONLY = {"root", "val_families", "num_frames", "image_size", "batch_size", "eval_batch_size", "num_workers",
                "one_caption_per_video", "feature_cache"}


def _caption_digest(config: SynthVTRConfig) -> str:
    data = build_synthvtr(config)
    return hashlib.sha256("\n".join(c.caption for c in data.captions).encode()).hexdigest()[:16]


def _one_sided(facts: frozenset[str]) -> bool:
    kinds = {f.split(":")[0] for f in facts}
    return kinds <= {"bg", "start", "start_n"} or kinds <= {"end", "end_n"}


def _hard_init_args() -> dict[str, Any]:
    return yaml.safe_load(HARD_YAML.read_text())["data"]["init_args"]


def _generator_config(init_args: dict[str, Any]) -> SynthVTRConfig:
    return SynthVTRConfig(**{_RENAMED.get(k, k): v for k, v in init_args.items() if k not in _LOADER_ONLY})


def test_knob_off_keeps_fingerprint_and_captions_of_synthvtr_1_1():
    assert SynthVTRConfig(one_sided_fraction=0.0).fingerprint() == SynthVTRConfig().fingerprint() == "d3ebc07c4f36"
    assert SynthVTRConfig(one_sided_fraction=0.5).fingerprint() != SynthVTRConfig().fingerprint()
    # digests of the captions written by the generator before the knob existed (commit f4001cd)
    assert _caption_digest(SynthVTRConfig(num_families=10, test_families=3, detail=1)) == "eb5fc019ba26d37d"
    assert _caption_digest(SynthVTRConfig(num_families=10, test_families=3)) == "fbe3dae561ad6e34"
    for bad in ({"one_sided_fraction": -0.1}, {"one_sided_fraction": 1.5},
                {"one_sided_fraction": 0.5, "aspects": ("event", "object_scene")}):
        with pytest.raises(ValueError, match="one_sided_fraction"):
            SynthVTRConfig(**bad)  # type: ignore[arg-type]


def test_one_sided_captions_describe_only_the_start_or_the_end():
    data = build_synthvtr(SynthVTRConfig(num_families=12, test_families=4, one_sided_fraction=1.0, detail=3))
    sides = set()
    for c in data.captions:
        assert c.facts <= data.facts[c.video_id]
        assert _one_sided(c.facts), (c.caption, c.facts)
        sides.add("start" if any(f.startswith("start") for f in c.facts) else "end")
    assert sides == {"start", "end"}
    half = build_synthvtr(SynthVTRConfig(num_families=40, test_families=4, one_sided_fraction=0.5, detail=3))
    one_sided = sum(_one_sided(c.facts) for c in half.captions)
    assert 0.4 < one_sided / len(half.captions) < 0.65  # ~half (+ the few detail-3 draws of start and end only)


def test_hard_config_same_size_lower_ceiling():
    hard = _generator_config(_hard_init_args())
    default = _generator_config(
        yaml.safe_load((REPO / "configs" / "data" / "synthvtr.yaml").read_text())["data"]["init_args"])
    assert default.fingerprint() == SynthVTRConfig().fingerprint()
    assert hard.family_size > default.family_size and hard.seed != default.seed and hard.detail < default.detail
    assert hard.one_sided_fraction > 0
    assert hard.num_videos == default.num_videos
    assert hard.test_families * hard.family_size == default.test_families * default.family_size
    assert _hard_init_args()["val_families"] * hard.family_size == 80  # as the default's 20 families of 4
    hard_oracle, default_oracle = build_synthvtr(hard).oracle(), build_synthvtr(default).oracle()
    assert hard_oracle["num_videos"] == default_oracle["num_videos"] == 160
    assert hard_oracle["R@1"] == pytest.approx(35.0, abs=0.05)  # the numbers in the README's SynthVTR section
    assert default_oracle["R@1"] == pytest.approx(62.8, abs=0.05)


def test_hard_config_composes_after_the_method_configs_and_fits(tmp_path: Path):
    """``--config configs/quickstart.yaml --config configs/data/synthvtr_hard.yaml`` (and after NarVid's config): the
    method's loader settings stay, the generator's are the hard ones; one tiny fit with the sizes overridden."""
    from main import main

    hard = _hard_init_args()
    for method in ("quickstart.yaml", "experiments/narvid_synthvtr.yaml"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
            main(["fit", "--config", str(REPO / "configs" / method), "--config", str(HARD_YAML), "--print_config"])
        assert done.value.code == 0
        data = yaml.safe_load(out.getvalue())["data"]["init_args"]
        shipped = yaml.safe_load((REPO / "configs" / method).read_text())["data"]["init_args"]
        assert {k: data[k] for k in hard} == hard
        assert {k: data[k] for k in shipped if k not in hard} == {k: v for k, v in shipped.items() if k not in hard}
    sizes = {"root": str(tmp_path / "data"), "num_families": 3, "test_families": 1, "val_families": 1,
             "video_size": 32, "video_frames": 16, "batch_size": 2, "num_workers": 0, "generator_workers": 1}
    main(["fit", "--config", str(REPO / "configs" / "quickstart.yaml"), "--config", str(HARD_YAML),
          *(f"--data.init_args.{k}={v}" for k, v in sizes.items()), "--trainer.max_epochs=1",
          "--trainer.limit_train_batches=2", "--trainer.accelerator=cpu",
          "--trainer.logger", csv_logger(tmp_path, "hard"),
          f"--trainer.callbacks.init_args.dirpath={tmp_path / 'ckpt'}"])
    record = json.loads(next((tmp_path / "hard").rglob("test/metrics.json")).read_text())
    generator = record["data"]["generator"]
    assert {k: generator[k] for k in ("family_size", "detail", "one_sided_fraction", "seed")} == {
        "family_size": 8, "detail": 1, "one_sided_fraction": 0.5, "seed": 1}
    expected = _generator_config({**hard, **{k: sizes[k] for k in ("num_families", "test_families")},
                                  "video_size": 32, "video_frames": 16})
    assert generator["fingerprint"] == expected.fingerprint()
    # the exact copy: its manifest's digest, as generation.json has it, and every file matched the manifest
    generation = json.loads(next((tmp_path / "data").glob("synthvtr-*/synthvtr/generation.json")).read_text())
    assert generator["content_sha256"] == generation["content_sha256"] and generator["content_verified"] is True
    assert record["num_videos"] == 8 and record["num_texts"] == 40  # one test family of 8, 5 captions each
