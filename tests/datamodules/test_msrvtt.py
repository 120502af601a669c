"""datamodules.msrvtt: MSR-VTT's annotation layout and its errors."""

from __future__ import annotations

import pytest

from datamodules import MSRVTT
from tests.datamodule_helpers import SMALL, CopyOf


def test_missing_csv_column(copy_of: CopyOf) -> None:
    root = copy_of("msrvtt")
    path = root / "MSRVTT_JSFUSION_test.csv"
    path.write_text(path.read_text().replace("sentence", "caption", 1))
    with pytest.raises(ValueError, match=r"MSRVTT_JSFUSION_test\.csv: missing column\(s\) \['sentence'\]"):
        MSRVTT(root=str(root), video_dir="videos/all", val_videos=4, **SMALL).setup("test")
