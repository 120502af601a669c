"""The results registry command: what it copies, what it refuses, and that the report reads the copy unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from experiments.report.register import default_name, main
from experiments.report.runs import ReportError, discover
from tests.run_helpers import REPO

SOURCE = REPO / "results" / "demo" / "clip4clip_meanP"


def _sweep_like_run(tmp_path: Path) -> Path:
    """A committed run laid out as the sweep runner leaves it: <name with = , { "}>/version_0/{test,...}."""
    run = tmp_path / 'sweep' / 'aux_captions={"narration": "n.jsonl"},seed_everything=0' / "version_0"
    shutil.copytree(SOURCE, run)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (run / "test" / "sim_t2v_video.npy").write_bytes(b"raw view")
    return run.parent


def test_register_copies_small_artifacts_and_the_report_reads_them(tmp_path: Path) -> None:
    sweep_run = _sweep_like_run(tmp_path)
    study = tmp_path / "results" / "study"
    (dest,) = main([str(sweep_run), "--study", str(study)])
    assert dest.name == "aux_captions_narration_n.jsonl_seed_everything_0"
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert copied == sorted(["config.yaml", "metrics.csv", "test/config.yaml", "test/metrics.json",
                             "test/sim_t2v.npy", "test/text_ids.json", "test/text_to_video.json",
                             "test/video_ids.json"])  # no checkpoint, no raw view matrix
    (run,), _ = discover([str(study)])
    assert run.metrics == json.loads((SOURCE / "test" / "metrics.json").read_text())["metrics"]


def test_register_names_refusals(tmp_path: Path) -> None:
    study = tmp_path / "study"
    main([f"{SOURCE}=meanP", "--study", str(study)])
    with pytest.raises(ReportError, match="already in the registry; pass --force"):
        main([f"{SOURCE}=meanP", "--study", str(study)])
    main([f"{SOURCE}=meanP", "--study", str(study), "--force"])
    with pytest.raises(ReportError, match="same name"):
        main([f"{SOURCE}=a", f"{SOURCE}=a", "--study", str(study)])
    partial = tmp_path / "partial"
    shutil.copytree(SOURCE, partial)
    record = json.loads((partial / "test" / "metrics.json").read_text())
    record["complete"] = False
    (partial / "test" / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(ReportError, match="incomplete test"):
        main([str(partial), "--study", str(study)])
    with pytest.raises(ReportError, match=r"no run with test/metrics\.json"):
        main([str(tmp_path / "study" / "nothing-here"), "--study", str(study)])
    assert default_name(Path("filter_mode=none,seed_everything=2")) == "filter_mode_none_seed_everything_2"


def test_register_without_the_matrix_for_metrics_only_tables(tmp_path: Path) -> None:
    study = tmp_path / "results" / "ablation"
    (dest,) = main([f"{_sweep_like_run(tmp_path)}=run_s0", "--study", str(study), "--no-matrix"])
    assert not (dest / "test" / "sim_t2v.npy").exists() and (dest / "test" / "metrics.json").is_file()
    (run,), _ = discover([str(study)])  # the metrics are read as usual; the matrix-reading sections need it
    assert run.metrics == json.loads((SOURCE / "test" / "metrics.json").read_text())["metrics"]
    with pytest.raises(ReportError, match="--no-matrices"):
        _ = run.test
