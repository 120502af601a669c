"""The one JSONL reader (datamodules/jsonl.py): a gzip-compressed file (``*.gz``, as the results registry keeps large
stores) reads exactly as the plain one, and a broken one is an error naming the file."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from datamodules.jsonl import read_jsonl_lines


def test_a_gzipped_file_reads_as_the_plain_one_torn_tail_rule_included(tmp_path: Path) -> None:
    text = b'{"a": 1}\n\n{"b": "\xe2\x80\xa8 two"}\n{"torn'
    plain, packed = tmp_path / "s.jsonl", tmp_path / "s.jsonl.gz"
    plain.write_bytes(text)
    packed.write_bytes(gzip.compress(text))
    assert list(read_jsonl_lines(packed)) == list(read_jsonl_lines(plain)) == [(1, {"a": 1}), (3, {"b": "\u2028 two"})]
    with pytest.raises(ValueError, match=r"s\.jsonl\.gz:4: malformed JSON line"):
        list(read_jsonl_lines(packed, tolerate_torn_tail=False))


def test_a_broken_gzip_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n')[:12])
    with pytest.raises(ValueError, match=r"store\.jsonl\.gz: not a readable gzip file"):
        list(read_jsonl_lines(path))
