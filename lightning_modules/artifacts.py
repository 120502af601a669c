"""What a test run leaves behind (``<run dir>/test``) and the record ``metrics.json`` holds, as a mixin of
``BaseRetrievalModule``: the similarity matrix and its raw views, the text/video ids and ground truth, the resolved
config, and the record's provenance (code state, seed, data, precision, lineage and its leakage verdict).

The report, re-scoring and the results registry read these files. Each is written atomically (a temporary file in
the same folder, then ``os.replace``): a crash leaves the previous file or none, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.atomic import save_npy_atomic, write_text_atomic
from lightning_modules.lineage import test_lineage, verdict_fields
from lightning_modules.provenance import run_provenance

__all__ = ["TestArtifactsMixin"]

log = logging.getLogger(__name__)





class TestArtifactsMixin:
    """``artifact_dir``, ``write_test_artifacts`` and ``test_record`` (metrics.json's content) of a test run.

    Reads the host's ``last_eval`` (``lightning_modules.evaluation``), ``trainer`` and ``hparams``.
    """

    __test__ = False  # a mixin, not a pytest test class (its name starts with "Test")

    def artifact_dir(self) -> Path:
        """``<run dir>/test``: the run dir is the first logger's ``log_dir`` (or ``default_root_dir``)."""
        return Path(self.trainer.log_dir or self.trainer.default_root_dir) / "test"

    def write_test_artifacts(self, metrics: dict[str, Any], out: Path) -> Path:
        """Write what a test run leaves behind (docs/reference/artifacts.md) into ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        ev = self.last_eval
        index = ev["index"]
        save_npy_atomic(out / "sim_t2v.npy", ev["sim"].numpy().astype(np.float32))
        for name, view in ev["views"].items():  # raw views, so fusion variants can be recomputed offline
            save_npy_atomic(out / f"sim_t2v_{name}.npy", view.numpy().astype(np.float32))
        write_text_atomic(out / "text_ids.json", json.dumps([index.text_ids[i] for i in ev["text_idx"].tolist()]))
        write_text_atomic(out / "video_ids.json", json.dumps([index.video_ids[i] for i in ev["video_idx"].tolist()]))
        write_text_atomic(out / "text_to_video.json", json.dumps(ev["gt"].tolist()))
        write_text_atomic(out / "metrics.json", json.dumps(self.test_record(metrics), indent=2, default=str))
        write_text_atomic(out / "config.yaml", self.resolved_config())
        log.info("test artifacts written to %s", out)
        return out

    def test_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """metrics.json's content for ``metrics``, with ``postprocess: none`` (a post-processed record sets its own).

        ``lineage`` is what fed the numbers (``lightning_modules/lineage.py``) and ``leakage`` the verdict computed
        from it: every read of test data in a role where that is a leak (never typed by hand).
        """
        ev = self.last_eval
        dm = self.trainer.datamodule
        return {
            "metrics": {k: float(v) for k, v in metrics.items()},
            "num_texts": int(metrics["num_texts"]), "num_videos": int(metrics["num_videos"]),
            "complete": ev["complete"], "method": type(self).__name__,
            "postprocess": "none", "seed": _seed(), **run_provenance(self.trainer),
            "ckpt_path": str(self.trainer.ckpt_path) if self.trainer.ckpt_path else None,
            "data": dm.describe("test") if hasattr(dm, "describe") else {},
            "world_size": self.trainer.world_size, "precision": str(self.trainer.precision),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **verdict_fields(test_lineage(self, dm)),
        }

    def resolved_config(self) -> str:
        """The run's resolved config as YAML: LightningCLI's (its SaveConfigCallback holds the parsed config), or,
        for a module run without the CLI, its class path and hyper-parameters."""
        from lightning.pytorch.cli import SaveConfigCallback

        for cb in self.trainer.callbacks:
            if isinstance(cb, SaveConfigCallback):
                return cb.parser.dump(cb.config, skip_none=False)
        import yaml

        return yaml.safe_dump({"model": {"class_path": f"{type(self).__module__}.{type(self).__name__}",
                                         "init_args": dict(self.hparams)}}, sort_keys=False, default_flow_style=False)


def _seed() -> int | None:
    """The seed ``seed_everything`` set (Lightning records it in ``PL_GLOBAL_SEED``), or None when none was set."""
    value = os.environ.get("PL_GLOBAL_SEED")
    return int(value) if value is not None else None
