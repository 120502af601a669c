"""Every shipped YAML parses against the current signatures (``--print_config``), composed as a user composes it.

The compositions are the ``python main.py ...`` commands in the configs' own header comments
(``tests/config_commands.py``): every experiment, ``quickstart.yaml``, ablation overlay and captioner names its
run command there, and a NarVid experiment the ``predict`` that writes its narration. ``tests/test_shipped_configs.py``
runs the same commands on generated data; this file only parses them (fast) plus the building blocks the README
composes by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from experiments.csi.cli import cli as csi_cli
from main import main
from tests.config_commands import CONFIGS, REPO, header_lines, prerequisites, run_command

BASE = CONFIGS / "base" / "trainer.yaml"
# files that must carry their run command in their header: (file, subcommand)
RUNNABLE = ([(p, "fit") for p in sorted((CONFIGS / "experiments").glob("*.yaml"))]
            + [(CONFIGS / "quickstart.yaml", "fit")]
            + [(p, "fit") for p in sorted((CONFIGS / "ablations").rglob("*.yaml"))]
            + [(p, "predict") for p in sorted((CONFIGS / "captioners").glob("*.yaml"))])
# building blocks composed by hand ("Running on real data with a real backbone"), not by any experiment file
BY_HAND = [
    ["fit", BASE, CONFIGS / "data" / "synthvtr.yaml", CONFIGS / "model" / "clip4clip_twotower.yaml"],
    ["fit", BASE, CONFIGS / "data" / "msvd.yaml", CONFIGS / "model" / "clip4clip.yaml"],
    ["fit", BASE, CONFIGS / "data" / "vatex.yaml", CONFIGS / "model" / "clip4clip.yaml"],
    ["fit", BASE, CONFIGS / "data" / "didemo.yaml", CONFIGS / "model" / "clip4clip.yaml"],
    # the hard SynthVTR after a method or captioner config ("SynthVTR, the embedded benchmark")
    ["fit", CONFIGS / "quickstart.yaml", CONFIGS / "data" / "synthvtr_hard.yaml"],
    ["fit", CONFIGS / "experiments" / "narvid_synthvtr.yaml", CONFIGS / "data" / "synthvtr_hard.yaml"],
    ["predict", CONFIGS / "captioners" / "synthvtr_narration.yaml", CONFIGS / "data" / "synthvtr_hard.yaml"],
    # CSI with the offline LLM prompt engineer (configs/csi/synthvtr.yaml's header)
    ["csi", CONFIGS / "csi" / "synthvtr.yaml", CONFIGS / "csi" / "engineer_smollm2.yaml"],
]


def header_compositions() -> list[list[str | Path]]:
    """Each runnable file's command and the predicts it needs first, as ``[subcommand, *configs, *extra args]``."""
    found: list[list[str | Path]] = []
    for path, subcommand in RUNNABLE:
        try:
            command = run_command(path, subcommand)
        except LookupError:
            continue  # test_runnable_config_has_its_command fails for it
        for needed in [*prerequisites(command), command]:
            entry: list[str | Path] = [needed.subcommand, *needed.configs, *needed.extra]
            if entry not in found:
                found.append(entry)
    return found


COMPOSED = header_compositions() + BY_HAND
# CaRe-DPO's pipeline configs (python -m experiments.care_dpo --config configs/care_dpo/<dataset>.yaml) and the
# stage configs each one composes
CARE_PIPELINES = sorted(p for p in (CONFIGS / "care_dpo").glob("*.yaml")
                        if "sft_config" in (yaml.safe_load(p.read_text()) or {}))
STAGES = {"sft_config": "fit", "dgdpo_config": "fit", "caption_config": "predict", "retriever_config": "fit",
          "sample_config": "predict", "score_config": "predict"}


def _listed(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def care_pipeline_files() -> set[Path]:
    used = set(CARE_PIPELINES)
    for path in CARE_PIPELINES:
        settings = yaml.safe_load(path.read_text())
        for key in [*STAGES, "data_config"]:
            used.update(REPO / p for p in _listed(settings.get(key)))
    return used


def every_shipped_yaml() -> list[Path]:
    return sorted(p for p in CONFIGS.rglob("*.yaml") if "local" not in p.parts)


def _id(combo: list[str | Path]) -> str:
    return "+".join(Path(p).stem if isinstance(p, Path) else p.lstrip("-") for p in combo)


@pytest.mark.parametrize("path,subcommand", [pytest.param(path, sub, id=str(path.relative_to(CONFIGS)))
                                             for path, sub in RUNNABLE])
def test_runnable_config_has_its_command(path: Path, subcommand: str) -> None:
    command = run_command(path, subcommand)  # raises naming the file when the header has none
    assert command.configs[-1] == path or subcommand == "predict", "the file itself is composed last"


def test_every_yaml_is_used_by_a_composition() -> None:
    used = {p for combo in COMPOSED for p in combo if isinstance(p, Path)} | care_pipeline_files()
    unused = sorted(str(p.relative_to(REPO)) for p in set(every_shipped_yaml()) - used)
    assert not unused, f"{unused}: compose them in a header command (or BY_HAND) so they are parsed"


@pytest.mark.parametrize("combo", COMPOSED, ids=_id)
def test_config_parses(combo: list[str | Path], capsys: pytest.CaptureFixture[str]) -> None:
    subcommand, *rest = combo
    args: list[str] = [str(subcommand)]
    for item in rest:
        args += ["--config", str(item)] if isinstance(item, Path) else [item]
    if subcommand == "csi":  # python -m experiments.csi: its own jsonargparse CLI
        with pytest.raises(SystemExit) as exit_info:
            csi_cli([*args[1:], "--print_config"])
        assert exit_info.value.code == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        assert {"captioner", "engineer", "evaluator", "data"} <= set(printed)
        return
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert "class_path" in printed["model"] and "class_path" in printed["data"]
    if subcommand == "fit" and not printed["data"]["class_path"].endswith("SynthVTR"):
        # a real-data training run fixes its global batch, so the number of GPUs does not change the experiment
        assert printed["data"]["init_args"]["global_batch_size"], "no data.init_args.global_batch_size"
        assert printed["data"]["init_args"]["batch_size"] is None
    if subcommand == "predict":
        assert printed["model"]["class_path"].endswith("Captioner")
        assert any(cb["class_path"].endswith("CaptionWriter") for cb in printed["trainer"]["callbacks"])


@pytest.mark.parametrize("path", CARE_PIPELINES, ids=lambda p: p.stem)
def test_care_dpo_pipeline_config_and_its_stages_parse(path: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Every stage a CaRe-DPO pipeline config runs parses as the pipeline composes it (DG-DPO with the dataset wrapped
    into its PreferenceDataModule when the pipeline has a data_config)."""
    from experiments.care_dpo.pipeline import Pipeline

    settings = yaml.safe_load(path.read_text())
    pipeline = Pipeline(**{k: settings[k] for k in [*STAGES, "data_config", "zero_shot_captions", "sources"]
                           if k in settings}, work=str(tmp_path / "work"), out=str(tmp_path / "out"))
    for key, subcommand in STAGES.items():
        args = [subcommand, *[a for p in _listed(settings[key]) for a in ("--config", str(REPO / p))]]
        if key == "dgdpo_config":
            overlay: dict = {"model": {"init_args": {"init_checkpoint": "sft.ckpt"}}}
            if settings.get("data_config"):
                videos = pipeline._data_section(_listed(settings["data_config"]))
                overlay["data"] = {"class_path": "PreferenceDataModule",
                                   "init_args": {"store": "store.jsonl", "videos": videos}}
            extra = tmp_path / "dgdpo.yaml"
            extra.write_text(yaml.safe_dump(overlay))
            args += ["--config", str(extra)]
        if key in ("sample_config", "score_config"):  # the training videos of the retriever configs' dataset
            videos = pipeline.stage_videos(feature_cache=True if key == "sample_config" else None)
            files = {"checkpoint": "stage.ckpt", "output": "out.jsonl"}
            if key == "score_config":
                files.update(samples="samples.jsonl", reference_captions="sft.jsonl")
            extra = tmp_path / f"{key}.yaml"
            extra.write_text(yaml.safe_dump({"model": {"init_args": files}, "data": {"init_args": {"videos": videos}}}))
            args += ["--config", str(extra)]
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--print_config"])
        assert exit_info.value.code == 0, f"{path.name}: {key}"
        printed = yaml.safe_load(capsys.readouterr().out)
        expected = {"sft_config": "CaptionerTraining", "dgdpo_config": "CaptionerTraining",
                    "caption_config": "Captioner", "retriever_config": "CaReRetriever",
                    "sample_config": "CaptionSampler", "score_config": "PreferenceScorer"}[key]
        assert printed["model"]["class_path"].endswith(expected), f"{path.name}: {key}"
        if subcommand == "fit" and path.stem != "synthvtr":  # the real stages' global batch survives the overlay
            assert printed["data"]["init_args"]["global_batch_size"], f"{path.name}: {key}"
            assert printed["data"]["init_args"]["batch_size"] is None, f"{path.name}: {key}"


# the real-data training configs: each states its device count (and the global batch it splits) in its header
REAL_TRAINING = sorted([*(p for p in (CONFIGS / "experiments").glob("*.yaml") if "synthvtr" not in p.stem),
                        *(p for p in (CONFIGS / "care_dpo").glob("*.yaml")
                          if "synthvtr" not in p.stem and p.stem != "caption")])


@pytest.mark.parametrize("path", REAL_TRAINING, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_real_config_header_names_the_devices_it_was_tested_with(path: Path) -> None:
    devices = [line for line in header_lines(path) if line.startswith("Devices:")]
    assert devices, f"{path.relative_to(REPO)}: no 'Devices: ...' line in the header comment"
    text = " ".join(header_lines(path)[header_lines(path).index(devices[0]):])
    assert "global batch" in text and "Tested" in text, f"{path.relative_to(REPO)}: {devices[0]}"
