"""``callbacks.test_time_postprocessing``: added only when the model asks for a post-processing; after a test, each
requested one re-scores the plain matrix into its own files (``metrics.json`` untouched). End to end through the CLI,
DSL and QB-Norm both: ``tests/test_postprocess_pipeline.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from callbacks.test_time_postprocessing import TestTimePostprocessing, check_query_bank, run_test_postprocessing
from lightning_modules import CLIP4Clip, OpenCLIPBackbone
from lightning_modules.postprocess import dual_softmax, postprocessed_metrics
from tests.lightning_modules.mixin_hosts import FakeEvalData, Host, one_hot


class Tested(Host):
    """A host after its plain test: ``last_eval`` and ``last_metrics`` from a real evaluation, a small record."""

    def __init__(self, postprocess: list[str]) -> None:
        super().__init__(FakeEvalData([0, 0, 1, 2], 3))
        self.hparams.update(postprocess=postprocess, dsl_temperature=100.0)
        torch.manual_seed(0)
        self._eval_store["text"].append((torch.arange(4), {"text": one_hot([0, 0, 1, 2], 3) + torch.rand(4, 3)}))
        self._eval_store["video"].append((torch.arange(3), {"video": one_hot([0, 1, 2], 3)}))
        self.last_metrics = self._evaluate("test")

    def test_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"metrics": metrics, "postprocess": "none"}


def test_the_model_adds_the_callback_only_when_it_asks_for_a_post_processing() -> None:
    backbone = OpenCLIPBackbone(model_name="vtr-tiny-clip", pretrained=None, max_words=16)
    plain = CLIP4Clip(backbone=backbone)
    assert not any(isinstance(cb, TestTimePostprocessing) for cb in plain.configure_callbacks())
    flagged = CLIP4Clip(backbone=backbone, postprocess=["dsl"])
    assert [type(cb) for cb in flagged.configure_callbacks()] == [TestTimePostprocessing]


def test_dsl_writes_its_own_files_from_the_plain_matrix(tmp_path: Path) -> None:
    host = Tested(["dsl"])
    sim, gt = host.last_eval["sim"], host.last_eval["gt"]
    results = run_test_postprocessing(host, host.last_eval, host.last_metrics, tmp_path)
    t2v, v2t = dual_softmax(sim, 100.0, "t2v"), dual_softmax(sim, 100.0, "v2t")
    expected = postprocessed_metrics(t2v, v2t, gt, host.last_metrics)
    assert {k: v for k, v in results["dsl"]["metrics"].items() if k != "postprocess_seconds"} == expected
    np.testing.assert_array_equal(np.load(tmp_path / "sim_t2v_dsl.npy"), t2v.numpy().astype(np.float32))
    np.testing.assert_array_equal(np.load(tmp_path / "sim_v2t_dsl.npy"), v2t.numpy().astype(np.float32))
    record = json.loads((tmp_path / "metrics_dsl.json").read_text())
    assert record["postprocess"]["name"] == "dsl" and record["postprocess"]["params"] == {"temperature": 100.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics_dsl.json", "sim_t2v_dsl.npy", "sim_v2t_dsl.npy"]


def test_on_test_end_runs_after_the_plain_test_and_keeps_no_test_features(tmp_path: Path) -> None:
    host = Tested(["dsl"])
    host.last_eval["video_feats"] = {"video": torch.ones(3, 3)}  # as a QB-Norm test keeps them for its bank
    host.hparams.write_artifacts = True
    host.trainer.default_root_dir, host.trainer.log_dir = str(tmp_path), None
    callback = TestTimePostprocessing()
    callback.on_test_end(host.trainer, host)  # type: ignore[arg-type]
    assert set(callback.results) == {"dsl"} and (tmp_path / "test" / "metrics_dsl.json").is_file()
    assert "video_feats" not in host.last_eval


def test_a_view_named_like_a_post_processing_is_refused(tmp_path: Path) -> None:
    host = Tested(["dsl"])
    host.last_eval["views"] = {"dsl": host.last_eval["sim"]}
    with pytest.raises(ValueError, match=r"similarity view named 'dsl'.*rename the view"):
        run_test_postprocessing(host, host.last_eval, host.last_metrics, tmp_path)


def test_qbnorm_needs_a_data_module_with_a_query_bank() -> None:
    host = Tested(["qbnorm"])
    with pytest.raises(TypeError, match=r"qbnorm needs a data module with query_bank .* FakeEvalData has none"):
        check_query_bank(host, host.trainer.datamodule)
