"""Every shipped YAML parses against the current signatures (``--print_config``), alone or composed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from main import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = CONFIGS / "base" / "trainer.yaml"
COMPOSED = [
    [BASE, CONFIGS / "data" / "msrvtt.yaml", CONFIGS / "model" / "clip4clip.yaml",
     CONFIGS / "experiments" / "clip4clip_msrvtt.yaml"],
    [BASE, CONFIGS / "data" / "synthvtr.yaml", CONFIGS / "model" / "clip4clip_twotower.yaml"],
    [BASE, CONFIGS / "data" / "msvd.yaml", CONFIGS / "model" / "clip4clip.yaml"],
    [BASE, CONFIGS / "data" / "vatex.yaml", CONFIGS / "model" / "clip4clip.yaml"],
    [BASE, CONFIGS / "data" / "didemo.yaml", CONFIGS / "model" / "clip4clip.yaml"],
    [CONFIGS / "quickstart.yaml"],
    [BASE, CONFIGS / "data" / "msrvtt.yaml", CONFIGS / "model" / "narvid.yaml",
     CONFIGS / "experiments" / "narvid_msrvtt.yaml"],
    [BASE, CONFIGS / "data" / "msrvtt.yaml", CONFIGS / "model" / "narvid.yaml",
     CONFIGS / "experiments" / "narvid_msrvtt.yaml", CONFIGS / "experiments" / "narvid_msrvtt_b16.yaml"],
    [BASE, CONFIGS / "data" / "msvd.yaml", CONFIGS / "model" / "narvid.yaml",
     CONFIGS / "experiments" / "narvid_msvd.yaml"],
    [BASE, CONFIGS / "data" / "vatex.yaml", CONFIGS / "model" / "narvid.yaml",
     CONFIGS / "experiments" / "narvid_vatex.yaml"],
    [BASE, CONFIGS / "data" / "didemo.yaml", CONFIGS / "model" / "narvid.yaml",
     CONFIGS / "experiments" / "narvid_didemo.yaml"],
]
# NarVid's SynthVTR experiment with each ablation overlay (the rows of the sweep files)
COMPOSED += [[CONFIGS / "experiments" / "narvid_synthvtr.yaml", overlay]
             for overlay in sorted((CONFIGS / "ablations").rglob("*.yaml"))]
# caption generation configs (``python main.py predict --config ...``), parsed with the predict subcommand
CAPTIONERS = sorted((CONFIGS / "captioners").glob("*.yaml"))
COMPOSED += [[path] for path in CAPTIONERS]


def every_shipped_yaml() -> list[Path]:
    return sorted(p for p in CONFIGS.rglob("*.yaml") if "local" not in p.parts)


def test_every_yaml_is_used_by_a_composition() -> None:
    used = {p for combo in COMPOSED for p in combo}
    assert set(every_shipped_yaml()) <= used, "add new configs to COMPOSED so they are parsed"


@pytest.mark.parametrize("combo", COMPOSED, ids=lambda c: "+".join(p.stem for p in c))
def test_config_parses(combo: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["predict" if combo[0] in CAPTIONERS else "fit"]
    for path in combo:
        args += ["--config", str(path)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert "class_path" in printed["model"] and "class_path" in printed["data"]
    if combo[0] in CAPTIONERS:
        assert printed["model"]["class_path"].endswith("Captioner")
        assert any(cb["class_path"].endswith("CaptionWriter") for cb in printed["trainer"]["callbacks"])
