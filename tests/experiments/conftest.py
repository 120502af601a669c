"""Run folders made once per session by the real CLI, shared by the report's and the shared modules' tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from experiments.report import main as report
from main import main
from tests.run_helpers import TINY_CLIP4CLIP, csv_logger


@pytest.fixture(scope="session")
def clip4clip_runs(fake_msrvtt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two methods (CLIP4Clip meanP / seqTransf) x two seeds, one epoch each, in CSVLogger layout."""
    out = tmp_path_factory.mktemp("report_runs")
    for header in ("meanP", "seqTransf"):
        for seed in (0, 1):
            main(["fit", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root", str(fake_msrvtt),
                  "--seed_everything", str(seed), "--model.init_args.sim_header", header,
                  "--trainer.max_epochs", "1", "--trainer.logger", csv_logger(out, f"{header}_s{seed}"),
                  # MSR-VTT's shipped selection (the tiny config selects on test for the pipeline tests)
                  "--data.init_args.val_protocol", "heldout"])
    return out


@pytest.fixture(scope="session")
def clip4clip_report(clip4clip_runs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The report of ``clip4clip_runs``: its folder, report.md and index.html."""
    runs = clip4clip_runs
    out = tmp_path_factory.mktemp("report") / "cmp"
    report([str(runs), "--out", str(out), "--resamples", "2000"])
    return {"out": out, "md": (out / "report.md").read_text(), "html": (out / "index.html").read_text()}


LOADER = {"video_dir": "videos", "video_size": 32, "video_frames": 16, "num_frames": 4, "image_size": 64,
          "batch_size": 4, "eval_batch_size": 3, "num_workers": 0, "generator_workers": 1, "train_sampling": "uniform"}


CONFIGS = {"default": {"num_families": 6, "family_size": 2, "test_families": 3, "val_families": 1},
           "hard": {"num_families": 5, "family_size": 3, "test_families": 2, "val_families": 1, "detail": 1,
                    "one_sided_fraction": 0.5, "generator_seed": 1}}


HEADERS = ("meanP", "seqTransf")


@pytest.fixture(scope="session")
def synthvtr_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CLIP4Clip meanP and seqTransf (seed 0, one epoch) on each configuration: four groups, two per configuration."""
    out = tmp_path_factory.mktemp("robust_runs")
    data = tmp_path_factory.mktemp("robust_data")
    for name, knobs in CONFIGS.items():
        config = data / f"synthvtr_{name}.yaml"
        config.write_text(yaml.safe_dump({"data": {"class_path": "SynthVTR",
                                                   "init_args": {"root": str(data), **LOADER, **knobs}}}))
        for header in HEADERS:
            main(["fit", "--config", str(TINY_CLIP4CLIP), "--config", str(config), "--model.init_args.sim_header",
                  header, "--trainer.max_epochs", "1", "--trainer.logger", csv_logger(out, f"{name}_{header}")])
    return out


# the names most tests of the report and the shared results modules use: the CLIP4Clip runs and their report (a test
# module that needs other runs defines its own ``runs`` / ``built``, which take precedence)
@pytest.fixture
def runs(clip4clip_runs: Path) -> Path:
    return clip4clip_runs


@pytest.fixture
def built(clip4clip_report: dict) -> dict:
    return clip4clip_report
