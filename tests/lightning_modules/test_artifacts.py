"""``lightning_modules.artifacts``: what a test leaves in ``<run dir>/test`` (each file written atomically:
tests/datamodules/test_atomic.py), and the resolved config of a module run without the CLI."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from tests.lightning_modules.mixin_hosts import FakeEvalData, Host, one_hot


class RecordedHost(Host):
    """The artifact writer with metrics.json's record reduced to the metrics (its provenance and lineage parts are
    tested where they are built: test_provenance.py, test_lineage.py)."""

    def test_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"metrics": metrics, "method": type(self).__name__}


def test_a_test_leaves_its_matrix_ids_ground_truth_record_and_config(tmp_path: Path) -> None:
    host = RecordedHost(FakeEvalData([1, 0, 1], 2), default_root_dir=str(tmp_path), log_dir=None)
    host._eval_store["text"].append((torch.tensor([2, 0, 1]), {"text": one_hot([1, 1, 0], 2)}))
    host._eval_store["video"].append((torch.tensor([1, 0]), {"video": one_hot([1, 0], 2)}))
    host.hparams.write_artifacts = True
    host.on_test_epoch_end()
    out = tmp_path / "test"
    assert host.artifact_dir() == out
    assert json.loads((out / "text_ids.json").read_text()) == ["t0", "t1", "t2"]
    assert json.loads((out / "video_ids.json").read_text()) == ["v0", "v1"]
    assert json.loads((out / "text_to_video.json").read_text()) == [1, 0, 1]
    np.testing.assert_array_equal(np.load(out / "sim_t2v.npy"), host.last_eval["sim"].numpy())
    assert json.loads((out / "metrics.json").read_text())["metrics"]["t2v_R1"] == 100.0
    config = yaml.safe_load((out / "config.yaml").read_text())  # no LightningCLI: class path and hyper-parameters
    assert config["model"]["class_path"].endswith("RecordedHost") and config["model"]["init_args"]["eval_text_chunk"]
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "metrics.json", "sim_t2v.npy", "text_ids.json",
                                                     "text_to_video.json", "video_ids.json"]
    # as readable as any file the user creates (they were 0600 through mkstemp: a shared run folder's results were
    # unreadable to everyone else)
    umask = os.umask(0)
    os.umask(umask)
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o666 & ~umask}
