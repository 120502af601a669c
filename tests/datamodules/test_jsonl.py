"""The one JSON/JSONL reader (datamodules/jsonl.py): strict decoding, the torn-last-line rule and the one repair every
appender uses before appending (the caption writer, the importer's --append, CSI's round log)."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given

from datamodules.jsonl import (
    MalformedFileError,
    parse_json,
    read_jsonl_lines,
    repair_torn_tail,
    repaired_bytes,
    replace_lone_surrogates,
)
from tests.malformed_inputs import JSON_VALUES, TEXT

RECORDS = st.lists(st.dictionaries(TEXT, JSON_VALUES, min_size=1, max_size=3), min_size=1, max_size=5)


def _jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


@pytest.mark.parametrize(("data", "message"), [
    (b'{"a": 1, "a": 2}', r"f\.json: key 'a' appears twice in one object"),
    (b'["caf\xe9"]', r"f\.json: not UTF-8 \(byte b'\\xe9' at line 1, byte 5"),
    (b"\xff\xfe[\x00]\x00", r"f\.json: not UTF-8"),  # UTF-16 is not guessed
    (b"[" * 5000 + b"]" * 5000, r"f\.json: JSON nested deeper than the parser allows"),
    (b'{"c": ["ok", "\\ud800"]}', r"f\.json: c\[1\] holds a lone UTF-16 surrogate escape"),
    (b'{"a":\n 1,}', r"f\.json: malformed JSON at line 2 column 4"),
])
def test_parse_json_refuses_with_the_file_and_place(data: bytes, message: str) -> None:
    with pytest.raises(MalformedFileError, match=message):
        parse_json(data, "f.json")


def test_parse_json_keeps_surrogate_pairs_and_unicode() -> None:
    assert parse_json('{"t": "\\ud83c\\udfac é 漢"}'.encode(), "f") == {"t": "🎬 é 漢"}


def test_replace_lone_surrogates_counts_and_joins_split_pairs() -> None:
    value = {"captions": ["ok \ud800 x", "\ud83c\udfac"], "k\udc80": 1}
    fixed, replaced = replace_lone_surrogates(value)
    assert fixed == {"captions": ["ok \ufffd x", "🎬"], "k\ufffd": 1} and replaced == 2
    assert replace_lone_surrogates("plain")[1] == 0


def test_repair_drops_a_tear_inside_a_multibyte_character(tmp_path: Path) -> None:
    store = tmp_path / "s.jsonl"
    whole = _jsonl([{"t": "a"}])
    store.write_bytes(whole + '{"t": "漢'.encode()[:-1])  # the kill cut 漢 after its first two bytes
    assert repair_torn_tail(store) == len('{"t": "漢'.encode()) - 1
    assert store.read_bytes() == whole
    store.write_bytes(whole + b'{"t": "b"}')  # whole but unterminated: kept, given its newline
    assert repair_torn_tail(store) == 0 and store.read_bytes() == whole + b'{"t": "b"}\n'


def test_repair_leaves_a_file_damaged_in_the_middle_unchanged(tmp_path: Path) -> None:
    store = tmp_path / "s.jsonl"
    data = b'{"t": "a"}\nnot json\n{"t": "c"}\n{"t": "d'
    store.write_bytes(data)
    with pytest.raises(MalformedFileError, match=r"s\.jsonl:2: malformed JSON line"):
        repair_torn_tail(store)
    assert store.read_bytes() == data


@given(records=RECORDS, data=st.data())
def test_generated_tears_are_repaired_to_the_whole_lines_before_them(records: list[dict], data: st.DataObject) -> None:
    """A store cut at any byte (also inside a multi-byte character) is repaired to exactly its whole lines, in place,
    and a record appended after the repair reads back intact; reading never raises."""
    whole = _jsonl(records)
    cut = data.draw(st.integers(0, len(whole)), label="cut")
    torn = whole[:cut]
    complete = torn[:torn.rfind(b"\n") + 1]
    tail = torn[len(complete):]
    # a record's line is one JSON object: a cut inside it is never whole JSON, a cut just before its newline is
    expected = complete + tail + b"\n" if tail and whole[cut:cut + 1] == b"\n" else complete
    assert repaired_bytes(torn, "s.jsonl") == expected
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.jsonl"
        path.write_bytes(torn)
        values = [v for _, v in read_jsonl_lines(path)]
        assert values == records[:len(values)]
        repair_torn_tail(path)
        assert path.read_bytes() == expected
        with path.open("ab") as fh:
            fh.write(_jsonl([{"appended": True}]))
        assert [v for _, v in read_jsonl_lines(path)][-1] == {"appended": True}


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
