"""Run folders in the real test-artifact format (``lightning_modules/base.py`` ``write_test_artifacts``) written from a
given similarity matrix, for the results registry's tests: the committed demo run's config, log and record as the
template, the metrics recomputed from the matrix, absolute paths where a real run has them."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lightning_modules.metrics import retrieval_metrics
from lightning_modules.postprocess import postprocessed_metrics
from tests.run_helpers import REPO

TEMPLATE = REPO / "results" / "demo" / "clip4clip_meanP"
VIEW_KEYS = ("t2v_R1", "t2v_R5", "t2v_R10", "v2t_R1", "rsum")


def scores(num_texts: int, num_videos: int, seed: int, ties: bool = False) -> tuple[np.ndarray, list[int]]:
    """A float32 matrix whose ground truth (five captions per video, as SynthVTR) tends to score high; ``ties``
    rounds the scores so that many tie."""
    rng = np.random.default_rng(seed)
    gt = [i % num_videos for i in range(num_texts)]
    sim = rng.normal(size=(num_texts, num_videos)).astype(np.float32)
    sim[np.arange(num_texts), gt] += 1.5
    if ties:
        sim = np.round(sim * 2) / 2
    return sim.astype(np.float32), gt


def template() -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """The committed demo run's record (without its registry object), config and metrics.csv."""
    record = json.loads((TEMPLATE / "metrics.json").read_text())
    record.pop("registry")
    config = yaml.safe_load((TEMPLATE / "config.yaml").read_text())
    return record, config, gzip.decompress((TEMPLATE / "metrics.csv.gz").read_bytes())


def full_run(run: Path, sim: np.ndarray, gt: list[int], seed: int = 0, views: dict[str, np.ndarray] | None = None,
             flags: dict[str, tuple[np.ndarray, np.ndarray | None]] | None = None, ckpt: Path | None = None,
             training_rows: bool = True, sim_header: str = "meanP", **record_changes: Any) -> Path:
    """Write ``run`` as ``main.py fit`` + test leaves it: ``config.yaml``, ``metrics.csv``, ``checkpoints/`` and
    ``test/`` (matrices, ids, ``metrics.json`` recomputed from ``sim``, ``metrics_<flag>.json`` for each flag's
    (t2v, v2t or None) matrices, ``<view>/...`` metrics for each view), ``sim_header`` in its config. Paths in it
    are absolute, as a run's are."""
    record, config, csv_bytes = template()
    test = run / "test"
    test.mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "best.ckpt").write_bytes(b"not a real checkpoint")
    np.save(test / "sim_t2v.npy", sim)
    num_texts, num_videos = sim.shape
    (test / "text_ids.json").write_text(json.dumps([f"video{g}#{i}" for i, g in enumerate(gt)]))
    (test / "video_ids.json").write_text(json.dumps([f"video{v}" for v in range(num_videos)]))
    (test / "text_to_video.json").write_text(json.dumps(gt))
    metrics = retrieval_metrics(sim, gt)
    for name, view in (views or {}).items():
        np.save(test / f"sim_t2v_{name}.npy", view)
        metrics.update({f"{name}/{k}": v for k, v in retrieval_metrics(view, gt).items() if k in VIEW_KEYS})
    record = {**copy.deepcopy(record), "metrics": {**metrics, "num_videos_failed": 0.0, "num_texts_unscored": 0.0},
              "num_texts": num_texts, "num_videos": num_videos, "seed": seed, "complete": True,
              "ckpt_path": str((ckpt or run / "checkpoints" / "best.ckpt").resolve()), **record_changes}
    record["data"]["aux_captions"] = {"supplement": str((run.parent / "captions" / "supplement.jsonl").resolve())}
    (test / "metrics.json").write_text(json.dumps(record, indent=2))
    for flag, (t2v, v2t) in (flags or {}).items():
        np.save(test / f"sim_t2v_{flag}.npy", t2v)
        if v2t is not None:
            np.save(test / f"sim_v2t_{flag}.npy", v2t)
        again = postprocessed_metrics(torch.from_numpy(t2v), None if v2t is None else torch.from_numpy(v2t),
                                      torch.tensor(gt), record["metrics"])
        flag_record = {**record, "metrics": again, "postprocess": {"name": flag, "params": {}}}
        (test / f"metrics_{flag}.json").write_text(json.dumps(flag_record, indent=2))
    config = copy.deepcopy(config)
    config["seed_everything"] = seed
    config["model"]["init_args"]["sim_header"] = sim_header
    for logger in config["trainer"]["logger"]:
        logger["init_args"]["save_dir"] = str(run.parent.resolve())
        logger["init_args"]["name"] = run.name
    config["ckpt_path"] = str(ckpt.resolve()) if ckpt else None
    text = "# lightning.pytorch==2.6.6\n" + yaml.safe_dump(config, sort_keys=False)
    (run / "config.yaml").write_text(text)
    (test / "config.yaml").write_text(text)
    if training_rows:
        (run / "metrics.csv").write_bytes(csv_bytes)
    else:  # a re-test logs test rows only
        (run / "metrics.csv").write_text("epoch,step,test/t2v_R1\n0,0,1.0\n")
    return run
