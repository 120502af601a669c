"""datamodules.annotations: the annotation readers refuse malformed files naming the file, line or id
(hand-written cases and generated mutations), and never load a coerced value.
"""

from __future__ import annotations

import pickle
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given

from datamodules import MSVD, DiDeMo
from tests.datamodule_helpers import SMALL, CopyOf
from tests.malformed_inputs import (
    annotation_files,
    file_strings,
    is_clear_error,
    load_every_split,
    mutate_file,
    snapshot,
    write_annotations,
)


def test_malformed_json(copy_of: CopyOf) -> None:
    root = copy_of("didemo")
    (root / "test_data.json").write_text('[{"video": "a.mp4", "description": "x",}]')
    with pytest.raises(ValueError, match=r"test_data\.json: malformed JSON at line 1 column \d+"):
        DiDeMo(root=str(root), **SMALL).setup("test")


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_pickle_with_forbidden_global(copy_of: CopyOf) -> None:
    root = copy_of("msvd")
    with (root / "raw-captions.pkl").open("wb") as fh:
        pickle.dump({"clip": [["a", "b"]], "x": _Evil()}, fh)
    with pytest.raises(ValueError, match=r"raw-captions\.pkl: refused to unpickle: forbidden global builtins\.print"):
        MSVD(root=str(root), **SMALL).setup("test")


def test_duplicate_id_in_split_list(copy_of: CopyOf) -> None:
    root = copy_of("didemo")
    ids = (root / "val_list.txt").read_text().split()
    (root / "val_list.txt").write_text("\n".join([*ids, ids[0]]) + "\n")
    with pytest.raises(ValueError, match=rf"val_list\.txt: video ids listed more than once: \['{ids[0]}'\]"):
        DiDeMo(root=str(root), **SMALL).setup("fit")


# --------------------------------------------------------------------------------------------- property-based
@pytest.mark.parametrize("dataset", ["msrvtt", "msvd", "vatex", "vatex_official", "didemo"])
@given(data=st.data())
def test_generated_malformed_annotation_files_fail_clearly_or_load_as_written(dataset: str,
                                                                              data: st.DataObject) -> None:
    """One drawn mutation of one of the dataset's annotation files (tests/malformed_inputs.py): the parser either
    refuses it with one of the suite's errors naming that file, or loads texts that are strings written in the files
    (never a coerced None/number/list), with unique ids and every video inside the video folder. Either way no file
    is changed."""
    with tempfile.TemporaryDirectory() as tmp:
        root = write_annotations(dataset, Path(tmp) / "ds")
        name = data.draw(st.sampled_from(annotation_files(dataset, root)), label="file")
        (root / name).write_bytes(mutate_file(data.draw, root / name))
        before = snapshot(root)
        try:
            splits = load_every_split(dataset, root)
        except Exception as exc:
            assert is_clear_error(exc, name), f"{type(exc).__name__}: {exc}"
        else:
            written = file_strings(root)
            videos = (root / "videos").resolve()
            for split in splits.values():
                assert len({t.text_id for t in split.texts}) == len(split.texts)
                for text in split.texts:
                    assert isinstance(text.text, str) and text.text.strip()
                    if dataset != "didemo":  # DiDeMo's texts are paragraphs joined from several strings
                        assert text.text in written, f"{text.text!r} is not written in any file"
                for video in split.videos:
                    assert isinstance(video.video_id, str) and video.path.resolve().is_relative_to(videos)
        assert snapshot(root) == before
