"""``lightning_modules/lineage.py``: the fit and test lineage nodes a module records, and the verdict computed from
them (the verdict's own rules are tested in tests/datamodules/test_lineage.py; whole CLI runs in tests/test_leakage.py).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from datamodules.annotations import Split, TextEntry, VideoEntry
from lightning_modules import lineage  # not `from ... import test_lineage`: pytest would collect it as a test
from lightning_modules.lineage import CHECKPOINT_KEY, checkpoint_lineage, fit_lineage, verdict_fields


def split(name: str, video_ids: list[str]) -> Split:
    videos = [VideoEntry(v, Path(f"/videos/{v}.mp4")) for v in video_ids]
    texts = [TextEntry(f"{v}#0", f"a caption of {v}", i) for i, v in enumerate(video_ids)]
    return Split(name, videos, texts, protocol="toy")


def data_module(train: list[str], val: list[str], test: list[str]) -> SimpleNamespace:
    return SimpleNamespace(name="toy", splits={"train": split("train", train), "val": split("val", val),
                                               "test": split("test", test)})


class Module:
    """The two hooks ``test_lineage`` asks a module for: its test-time reads and the fit node it carries."""

    def __init__(self, fit: dict[str, Any] | None) -> None:
        self.fit = fit

    def lineage_test_reads(self, dm: Any, test: Any) -> tuple[list, list, list]:
        return [], [], []

    def fit_lineage_node(self) -> dict[str, Any] | None:
        return self.fit


def test_a_fit_on_disjoint_splits_gives_a_test_run_with_no_leak() -> None:
    dm = data_module(["a", "b"], ["c"], ["d", "e"])
    fit = fit_lineage(Module(None), dm)
    assert [(r["role"], r["test_videos"]) for r in fit["reads"]] == [("training", 0), ("model selection", 0)]
    fields = verdict_fields(lineage.test_lineage(Module(fit), dm))
    assert fields["leakage"] == [] and fields["leakage_unverified"] == []
    assert fields["lineage"]["upstream"][0]["node"] == "fit"


def test_model_selection_on_test_videos_is_named_in_the_test_runs_verdict() -> None:
    dm = data_module(["a", "b"], ["d"], ["d", "e"])
    fields = verdict_fields(lineage.test_lineage(Module(fit_lineage(Module(None), dm)), dm))
    assert len(fields["leakage"]) == 1
    assert "model selection read 1 test video and 1 test text" in fields["leakage"][0]
    assert "[toy/val]" in fields["leakage"][0]


def test_checkpoint_lineage_returns_the_record_or_says_why_there_is_none() -> None:
    record = {"node": "fit"}
    assert checkpoint_lineage({CHECKPOINT_KEY: record}, "/runs/x/last.ckpt") == (record, None)
    record, why = checkpoint_lineage({"state_dict": {}}, "/runs/x/old.ckpt")
    assert record is None and "old.ckpt has no lineage record" in why


def test_a_test_run_without_a_fit_record_is_unverified_not_clean() -> None:
    """Weights of unknown provenance (no fit node, and no checkpoint named either) are not presented as leak-free:
    the verdict is computed only from what was recorded, so a module built by hand has just its test read."""
    dm = data_module(["a"], ["b"], ["c"])
    node = lineage.test_lineage(Module(None), dm)
    assert [r["role"] for r in node["reads"]] == ["test"]
    assert node["upstream"] == []
