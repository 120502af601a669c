"""The results registry command: the compact files it writes, what it checks and refuses, W&B, and that the report
reads the registered copy as it reads the run folder."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from experiments.registry.register import default_name, main
from experiments.results import registry_format as registry
from experiments.results.runs import ReportError, discover, load_test_set, split_retests
from experiments.results.sections import recheck
from lightning_modules.metrics import ranks_v2t
from tests.registry_helpers import full_run, scores
from tests.report_helpers import offline_wandb, wandb_records

SWEEP_NAME = 'aux_captions={"narration": "n.jsonl"},seed_everything=0'


def _sweep_like_run(tmp_path: Path, seed: int = 0, **kwargs: object) -> Path:
    """A run laid out as the sweep runner leaves it: <name with = , { "}>/version_0/{test,checkpoints,...}, with a
    raw view and two post-processing flags (DSL with its own v2t matrix, QB-Norm with v2t left plain)."""
    sim, gt = scores(40, 12, seed)
    rng = np.random.default_rng(seed + 100)
    view = (sim + rng.normal(scale=0.5, size=sim.shape)).astype(np.float32)
    flags = {"dsl": (sim * 2.0, (sim * 3.0).astype(np.float32)),
             "qbnorm": ((sim - 0.1 * view).astype(np.float32), None)}
    run = full_run(tmp_path / "sweep" / SWEEP_NAME / "version_0", sim, gt, seed, {"video": view}, flags, **kwargs)
    np.save(run / "test" / "sim_bank_qbnorm.npy", rng.normal(size=(15, 12)).astype(np.float32))
    return run.parent


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_register_keeps_compact_files_that_the_report_reads_like_the_run_folder(tmp_path: Path) -> None:
    sweep_run = _sweep_like_run(tmp_path)
    source = sweep_run / "version_0"
    study = tmp_path / "results" / "study"
    (dest,) = main([str(sweep_run), "--study", str(study)])
    assert dest.name == "aux_captions_narration_n.jsonl_seed_everything_0"
    # one config, the log, the record and a per-query file per matrix; no checkpoint and no matrix
    assert _files(dest) == ["config.yaml", "metrics.csv.gz", "metrics.json", "metrics_dsl.json",
                            "metrics_qbnorm.json", "queries.npz", "queries_dsl.npz", "queries_qbnorm.npz",
                            "queries_video.npz"]
    (test_set,) = [p for p in study.iterdir() if p.is_file()]
    assert registry.TEST_SET.fullmatch(test_set.name)
    assert gzip.decompress((dest / "metrics.csv.gz").read_bytes()) == (source / "metrics.csv").read_bytes()
    record = json.loads((dest / "metrics.json").read_text())
    info = record["registry"]
    assert info["test_set"] == test_set.name and info["test_set_sha256"] == hashlib.sha256(
        test_set.read_bytes()).hexdigest()
    matrices = {m["file"]: m for m in info["matrices"]}
    assert set(matrices) == {p.name for p in (source / "test").glob("*.npy")}
    for name, entry in matrices.items():
        array = np.load(source / "test" / name)
        assert entry["sha256"] == hashlib.sha256((source / "test" / name).read_bytes()).hexdigest()
        assert entry["shape"] == list(array.shape) and entry["dtype"] == "float32"
    assert matrices["sim_t2v.npy"]["queries"] == "queries.npz"
    assert matrices["sim_v2t_dsl.npy"]["queries"] == matrices["sim_t2v_dsl.npy"]["queries"] == "queries_dsl.npz"
    assert matrices["sim_bank_qbnorm.npy"]["queries"] is None  # QB-Norm's bank scores: the W&B artifact only
    # no machine path: the run's own checkpoint relative to its folder, the rest relative to where it was made
    for path in dest.rglob("*"):
        if path.suffix in (".json", ".yaml"):
            assert not registry.EMBEDDED_ABSOLUTE.search(path.read_text()), path
    config = yaml.safe_load((dest / "config.yaml").read_text())
    assert record["ckpt_path"] == "checkpoints/best.ckpt"
    assert config["trainer"]["logger"][0]["init_args"]["save_dir"] == ".."
    assert record["data"]["aux_captions"]["supplement"] == "../captions/supplement.jsonl"
    assert (dest / "config.yaml").read_text().startswith("# lightning.pytorch==")

    (run,), _ = discover([str(study)])
    full = load_test_set(source / "test")
    assert run.registered and run.metrics == json.loads((source / "test" / "metrics.json").read_text())["metrics"]
    test = run.test
    assert test.text_ids == full.text_ids and test.video_ids == full.video_ids
    assert np.array_equal(test.ranks, full.ranks) and np.array_equal(test.v2t_ranks, full.v2t_ranks)
    gt = torch.tensor(json.loads((source / "test" / "text_to_video.json").read_text()))
    assert test.v2t_ranks.tolist() == ranks_v2t(np.load(source / "test" / "sim_t2v.npy"), gt).tolist()
    for row in range(len(test.text_ids)):
        assert test.top(row, 10) == full.top(row, 10)
        assert test.top_scores(row, 10) == full.top_scores(row, 10)
    assert recheck(run) == [] and recheck(run, "dsl") == [] and recheck(run, "qbnorm") == []
    assert run.postprocessed_test("qbnorm").v2t_ranks is None  # left plain: checked with the plain v2t ranks
    assert run.postprocessed_test("dsl").v2t_ranks.tolist() == ranks_v2t(
        np.load(source / "test" / "sim_v2t_dsl.npy"), gt).tolist()
    with pytest.raises(ReportError, match=r"keeps the top 10 videos of each query.*needs the full similarity matrix"):
        test.top(0, 11)


def test_register_writes_the_same_bytes_twice(tmp_path: Path) -> None:
    sweep_run = _sweep_like_run(tmp_path)
    first, second = tmp_path / "a" / "study", tmp_path / "b" / "study"
    main([f"{sweep_run}=run", "--study", str(first)])
    main([f"{sweep_run}=run", "--study", str(second)])
    assert _files(first) == _files(second)
    for name in _files(first):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_register_refuses_metrics_its_matrix_does_not_give_and_writes_nothing(tmp_path: Path) -> None:
    study = tmp_path / "results" / "study"
    for what, key in (("metrics.json", "t2v_R5"), ("metrics.json", "video/t2v_R1"), ("metrics_dsl.json", "v2t_R1")):
        sweep_run = _sweep_like_run(tmp_path / what / key.replace("/", "_"))
        path = sweep_run / "version_0" / "test" / what
        record = json.loads(path.read_text())
        record["metrics"][key] += 2.5
        path.write_text(json.dumps(record))
        with pytest.raises(ReportError, match=rf"disagree with {re.escape(what)}.*{re.escape(key)}.*cannot replace"):
            main([str(sweep_run), "--study", str(study)])
        assert not study.exists() or list(study.iterdir()) == []  # no folder, no test set, no temporary folder


def test_register_refuses_a_run_with_uncommitted_changes_unless_allowed(tmp_path: Path) -> None:
    sweep_run = _sweep_like_run(tmp_path, git_dirty=True, git_diff_sha256="9f" * 32)
    study = tmp_path / "results" / "study"
    with pytest.raises(ReportError, match=r"uncommitted changes \(git_dirty: true, diff 9f9f9f9f\).*--allow-dirty"):
        main([f"{sweep_run}=dirty_s0", "--study", str(study)])
    assert not study.exists()
    (dest,) = main([f"{sweep_run}=dirty_s0", "--study", str(study), "--allow-dirty"])
    record = json.loads((dest / "metrics.json").read_text())
    assert record["git_dirty"] is True and record["git_diff_sha256"] == "9f" * 32
    path = sweep_run / "version_0" / "test" / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "git_dirty": "yes"}))
    with pytest.raises(ReportError, match="git_dirty must be true or false, got 'yes'"):
        main([f"{sweep_run}=other", "--study", str(study), "--allow-dirty"])


def test_register_names_refusals(tmp_path: Path) -> None:
    source = _sweep_like_run(tmp_path) / "version_0"
    study = tmp_path / "study"
    main([f"{source}=meanP", "--study", str(study)])
    with pytest.raises(ReportError, match="already in the registry; pass --force"):
        main([f"{source}=meanP", "--study", str(study)])
    main([f"{source}=meanP", "--study", str(study), "--force"])
    assert sorted(p.name for p in study.iterdir()) == ["meanP", next(p.name for p in study.glob("test_set_*"))]
    with pytest.raises(ReportError, match="same name"):
        main([f"{source}=a", f"{source}=a", "--study", str(study)])
    partial = full_run(tmp_path / "partial", *scores(10, 5, 1), complete=False)
    with pytest.raises(ReportError, match="incomplete test"):
        main([str(partial), "--study", str(study)])
    with pytest.raises(ReportError, match=r"no run with test/metrics\.json"):
        main([str(tmp_path / "study" / "nothing-here"), "--study", str(study)])
    stray = full_run(tmp_path / "stray", *scores(10, 5, 2))
    np.save(stray / "test" / "sim_t2v_extra.npy", np.zeros((10, 5), dtype=np.float32))
    with pytest.raises(ReportError, match=r"neither a similarity view of metrics\.json .* nor a post-processing"):
        main([str(stray), "--study", str(study)])
    assert default_name(Path("filter_mode=none,seed_everything=2")) == "filter_mode_none_seed_everything_2"


def test_register_rewrites_an_absolute_path_inside_a_longer_text(tmp_path: Path) -> None:
    """A CaRe-DPO retriever's lineage names its captions' model as ``trained-captioner(<checkpoint path>)``: the
    path inside the text is rewritten like a path alone (relative to the run folder), not refused."""
    runs = tmp_path / "work" / "seed0"
    checkpoint = runs / "sft" / "run" / "checkpoints" / "last.ckpt"
    lineage = {"stage": "test", "upstream": [{"stage": "captions", "model": f"trained-captioner({checkpoint})",
                                              "note": "K / #test 1/0.07 stays"}]}
    source = full_run(runs / "retriever" / "dgdpo-role" / "run", *scores(10, 5, 4), lineage=lineage, leakage=[])
    (dest,) = main([f"{source}=dgdpo_s0", "--study", str(tmp_path / "results" / "study")])
    upstream = json.loads((dest / "metrics.json").read_text())["lineage"]["upstream"][0]
    assert upstream["model"] == "trained-captioner(../../../sft/run/checkpoints/last.ckpt)"
    assert upstream["note"] == "K / #test 1/0.07 stays"
    assert str(tmp_path) not in (dest / "metrics.json").read_text()


def test_register_without_the_matrix_for_metrics_only_tables(tmp_path: Path) -> None:
    study = tmp_path / "results" / "ablation"
    (dest,) = main([f"{_sweep_like_run(tmp_path)}=run_s0", "--study", str(study), "--no-matrix"])
    assert not list(dest.glob("queries*.npz")) and (dest / "metrics.json").is_file()
    (run,), _ = discover([str(study)])  # the metrics are read as usual; the matrix-reading sections need the file
    assert run.metrics["t2v_R1"] == json.loads((tmp_path / "sweep" / SWEEP_NAME / "version_0" / "test" /
                                                "metrics.json").read_text())["metrics"]["t2v_R1"]
    with pytest.raises(ReportError, match="--no-matrices"):
        _ = run.test


def test_runs_registered_together_share_the_test_set_and_a_retest_finds_its_original(tmp_path: Path) -> None:
    sim, gt = scores(30, 6, 3)
    original = full_run(tmp_path / "runs" / "seq" / "version_0", sim, gt)
    retest = full_run(tmp_path / "runs" / "seq_retest" / "version_0", sim, gt,
                      ckpt=original / "checkpoints" / "best.ckpt", training_rows=False)
    study = tmp_path / "results" / "study"
    main([f"{original}=seq_s0", f"{retest}=seq_retest_s0", "--study", str(study)])
    assert len(list(study.glob("test_set_*.json"))) == 1
    record = json.loads((study / "seq_retest_s0" / "metrics.json").read_text())
    assert record["ckpt_path"] == "../seq_s0/checkpoints/best.ckpt"
    assert yaml.safe_load((study / "seq_retest_s0" / "config.yaml").read_text())["ckpt_path"] == record["ckpt_path"]
    runs, _ = discover([str(study)])
    kept, retests = split_retests(runs)
    assert [r.name for r in kept] == ["seq_s0"] and [(a.name, b.name) for a, b in retests] == [
        ("seq_retest_s0", "seq_s0")]


def test_register_wandb_uploads_the_full_matrices_as_an_offline_artifact(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    offline_wandb(tmp_path, monkeypatch)
    source = _sweep_like_run(tmp_path) / "version_0"
    study = tmp_path / "results" / "study"
    (dest,) = main([f"{source}=run_s0", "--study", str(study), "--wandb", "--wandb-project", "vtr-test"])
    info = json.loads((dest / "metrics.json").read_text())["registry"]["wandb"]
    assert info == {"project": "vtr-test", "artifact": "matrices-study-run_s0"}
    (run_dir,) = (tmp_path / "wandb_dir" / "wandb").glob("offline-run-*")
    (log,) = run_dir.glob("run-*.wandb")
    (artifact,) = [r.artifact for r in wandb_records(log) if r.WhichOneof("record_type") == "artifact"]
    assert artifact.type == "similarity-matrices" and artifact.name == info["artifact"]
    entries = {e.path: e for e in artifact.manifest.contents}
    expected = {p.name for p in (source / "test").glob("*.npy")} | {
        "text_ids.json", "video_ids.json", "text_to_video.json", "metrics.json", "metrics_dsl.json",
        "metrics_qbnorm.json"}
    assert set(entries) == expected
    for name, entry in entries.items():  # W&B's digest is the file's base64 md5: these are the run's bytes
        md5 = base64.b64encode(hashlib.md5((source / "test" / name).read_bytes()).digest()).decode()
        assert entry.digest == md5, name
    sha = json.loads(artifact.metadata)["sha256"]
    assert sha == {m["file"]: m["sha256"] for m in json.loads((dest / "metrics.json").read_text())["registry"][
        "matrices"]}
