"""Shared by the tests that run the CLI: repository paths, the tiny CLIP4Clip test config, a CSV logger argument,
metrics recomputed from a run's saved artifacts, and NarVid's tiny CLI arguments."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lightning_modules.metrics import retrieval_metrics

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# the tiny-backbone twin of configs/experiments/clip4clip_msrvtt.yaml used by the CLI tests
TINY_CLIP4CLIP = TESTS / "conf" / "clip4clip_tiny.yaml"


def csv_logger(save_dir: Path, name: str) -> str:
    """``--trainer.logger`` value: one CSVLogger under ``save_dir/name``."""
    return json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                        "init_args": {"save_dir": str(save_dir), "name": name}}])


def recompute(test_dir: Path) -> dict[str, float]:
    """Metrics recomputed from a test directory's saved similarity matrix and ground truth."""
    import numpy as np

    sim = np.load(test_dir / "sim_t2v.npy")
    gt = json.loads((test_dir / "text_to_video.json").read_text())
    return retrieval_metrics(sim, gt)


def assert_metrics_match_artifacts(test_dir: Path) -> dict:
    """``metrics.json`` equals the metrics recomputed from the saved artifacts; returns the record."""
    record = json.loads((test_dir / "metrics.json").read_text())
    again = recompute(test_dir)
    for key, value in again.items():
        assert abs(record["metrics"][key] - value) < 1e-4, key
    return record


def narvid_args(root: Path, out: Path, name: str) -> list[str]:
    """``fit`` arguments for a tiny frozen-trunk NarVid on a fake MSR-VTT with ``captions/narration_test.jsonl``."""
    model = json.dumps({"class_path": "NarVid", "init_args": {
        "backbone": {"class_path": "OpenCLIPBackbone",
                     "init_args": {"model_name": "vtr-tiny-clip", "pretrained": None, "max_words": 16,
                                   "freeze_video": True, "freeze_text": True}},
        "temporal_layers": 1, "temporal_heads": 8, "nucleus_p": 0.5, "lr": 1e-3, "eval_text_chunk": 4,
        "eval_video_chunk": 5}})
    # the data settings here are CLIP4Clip's test twin (tests/conf/clip4clip_tiny.yaml), so NarVid's uniform training
    # sampling (configs/experiments/narvid_*.yaml) is set by hand; tests/test_shipped_configs.py runs the shipped ones
    return ["fit", "--config", str(TINY_CLIP4CLIP), "--model", model, "--data.init_args.root", str(root),
            "--data.init_args.train_sampling", "uniform",
            "--data.init_args.aux_captions", json.dumps({"narration": "captions/narration_test.jsonl"}),
            "--trainer.max_epochs", "1", "--trainer.logger", csv_logger(out, name)]


@contextmanager
def serve_on_loopback(handler: Any) -> Iterator[str]:
    """Serve ``handler`` (a ``BaseHTTPRequestHandler`` class or factory) on a free 127.0.0.1 port until the block
    ends; yields ``http://127.0.0.1:<port>/``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()

