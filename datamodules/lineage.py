"""Data lineage: what every stage read, and the leakage verdict computed from it.

A number is only as clean as everything that fed it. Each stage that reads data records a *lineage node*:

* a training run (``fit``): the training split, the model-selection split, and the auxiliary captions it trained on;
* a caption store (``predict`` with a captioner): the videos it captioned and, for a ``{text}`` prompt, the texts it
  was filled with, plus the captioner's own upstream (a trained captioner's checkpoint, a learnt prompt);
* ExCae's caption self-improvement (CSI): the probe videos and texts that chose the prompt;
* CaRe-DPO's preference store: the videos its captions were sampled for and the scorer that labelled them;
* QB-Norm's query bank; and a test run itself: the test split, the auxiliary captions it read and any test-time
  input chosen through the ground-truth pairing (conical optimisation's ``paired`` supplements).

Every read is counted against the *test split* of the data module that made it (``checked_against``: dataset,
split and the sha256 of its sorted video ids and text ids): how many of the test videos it read and how many test
texts (by id, or by the exact string for texts that carry no id). ``leakage_verdict`` walks a test run's nodes and
their upstream and reports every read that touched the test split in a role where that is a leak (training,
selection, prompt texts, probe set, preference labels, query bank, ground-truth pairing); captioning a test video
from the video alone is not one. A node checked against another test split cannot be verified against this one and
is reported as such, never as clean.

This module is torch-free; ``lightning_modules/lineage.py`` attaches the nodes to checkpoints and test records.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from datamodules.annotations import Split
from datamodules.atomic import write_json_atomic
from datamodules.checksums import ids_sha256

log = logging.getLogger(__name__)

LINEAGE_VERSION = 1

# the roles a read can play; reading test data in a role of LEAKING_ROLES is a leak
TRAINING, SELECTION, PROMPT_TEXTS, CAPTIONED_VIDEOS = "training", "model selection", "prompt texts", "captioned videos"
PROBE_SET, PREFERENCE_LABELS, QUERY_BANK, GROUND_TRUTH = "probe set", "preference labels", "query bank", \
    "ground-truth pairing"
TEST = "test"
# every text a store's {text} prompts were filled with, whoever reads the records: informational (the run that reads
# a record counts its own conditioning text as PROMPT_TEXTS)
PROMPT_TEXTS_WRITTEN = "prompt texts (whole store)"
LEAKING_ROLES = frozenset({TRAINING, SELECTION, PROMPT_TEXTS, PROBE_SET, PREFERENCE_LABELS, QUERY_BANK,
                           GROUND_TRUTH})


class TestSet:
    """The test split a lineage is checked against: its ids, its texts (as strings) and its summary."""

    __test__ = False  # not a pytest class

    def __init__(self, dataset: str, split: Split) -> None:
        self.dataset = dataset
        self.split_name = split.name
        self.video_ids = frozenset(v.video_id for v in split.videos)
        self.text_ids = frozenset(t.text_id for t in split.texts)
        self.texts = frozenset(t.text.strip() for t in split.texts)
        self.summary = {"dataset": dataset, "split": split.name, "protocol": split.protocol,
                        "n_videos": len(self.video_ids), "n_texts": len(self.text_ids),
                        "videos_sha256": ids_sha256(self.video_ids), "texts_sha256": ids_sha256(self.text_ids)}

    def count_videos(self, video_ids: Iterable[str]) -> int:
        return len(self.video_ids.intersection(video_ids))

    def count_texts(self, text_ids: Iterable[str] = (), texts: Iterable[str] = ()) -> int:
        """Test texts among ``text_ids`` (by id) plus those among ``texts`` (by exact string, stripped)."""
        by_id = self.text_ids.intersection(text_ids)
        by_text = {t.strip() for t in texts} & self.texts
        return len(by_id) + len(by_text)


def same_test(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Two ``checked_against`` summaries name the same test split (dataset and both id digests)."""
    if not a or not b:
        return False
    return all(a.get(k) == b.get(k) for k in ("dataset", "videos_sha256", "texts_sha256"))


def split_read(role: str, split: Split, test: TestSet | None, dataset: str, detail: str = "") -> dict[str, Any]:
    """A read of a whole split (its videos and texts) in ``role``, counted against ``test``."""
    video_ids = [v.video_id for v in split.videos]
    text_ids = [t.text_id for t in split.texts]
    return read_record(role, dataset, split.name, video_ids, text_ids, test, detail=detail)


def read_record(role: str, dataset: str, split: str, video_ids: Sequence[str], text_ids: Sequence[str],
                test: TestSet | None, texts: Sequence[str] = (), detail: str = "",
                test_videos: int | None = None, test_texts: int | None = None) -> dict[str, Any]:
    """One read: its role, what it read (counts and digests) and how much of it was test data.

    ``texts`` are strings read without ids (a ``{text}`` prompt filled from an older store); they count against the
    test texts by exact string. ``test_videos`` / ``test_texts`` override the counts when the caller computed them.
    """
    record: dict[str, Any] = {"role": role, "leaks": role in LEAKING_ROLES, "dataset": dataset, "split": split,
                              "n_videos": len(set(video_ids)), "n_texts": len(set(text_ids)) + len(set(texts)),
                              "videos_sha256": ids_sha256(video_ids), "texts_sha256": ids_sha256(text_ids)}
    if detail:
        record["detail"] = detail
    if test is not None:
        record["test_videos"] = test.count_videos(video_ids) if test_videos is None else test_videos
        record["test_texts"] = test.count_texts(text_ids, texts) if test_texts is None else test_texts
    else:
        record["test_videos"] = test_videos
        record["test_texts"] = test_texts
    return record


def node(kind: str, name: str, test: TestSet | None, reads: Sequence[dict[str, Any]],
         upstream: Sequence[dict[str, Any]] = (), missing: Sequence[str] = (),
         **extra: Any) -> dict[str, Any]:
    """A lineage node (JSON-serialisable): what one stage read and what fed it."""
    out: dict[str, Any] = {"lineage_version": LINEAGE_VERSION, "node": kind, "name": name,
                           "checked_against": test.summary if test is not None else None,
                           "reads": list(reads), "upstream": [u for u in upstream if u], "missing": list(missing)}
    out.update(extra)
    return out


# --------------------------------------------------------------------------------------------- records of a store
def conditioning_texts(records: Iterable[Any]) -> tuple[list[str], list[str]]:
    """The text ids (and, for records without an id, the strings) that ``{text}`` prompts were filled with."""
    ids: list[str] = []
    strings: list[str] = []
    for record in records:
        text_id = getattr(record, "context_text_id", None)
        text = getattr(record, "context_text", None)
        if text_id:
            ids.append(text_id)
        elif text:
            strings.append(text)
    return ids, strings


def caption_read(role_split: str, kind: str, path: str, records: Sequence[Any], test: TestSet | None,
                 dataset: str) -> list[dict[str, Any]]:
    """The reads of the auxiliary caption records a stage consumed: the videos they describe (not a leak) and the
    texts their prompts were filled with (a leak when those are test texts)."""
    video_ids = [r.video_id for r in records]
    reads = [read_record(CAPTIONED_VIDEOS, dataset, role_split, video_ids, [], test,
                         detail=f"{kind} captions of {len(video_ids)} videos ({Path(path).name})")]
    ids, strings = conditioning_texts(records)
    if ids or strings:
        reads.append(read_record(PROMPT_TEXTS, dataset, role_split, [], ids, test, texts=strings,
                                 detail=f"the {{text}} prompts of {Path(path).name} ({kind}) were filled with these"))
    return reads


def sidecar_path(path: str | Path) -> Path:
    """Where the lineage of a file (a caption store, a prompt, a preference store) lives: ``<file>.lineage.json``."""
    path = Path(path)
    return path.with_name(path.name + ".lineage.json")


def write_sidecar(path: str | Path, lineage: Mapping[str, Any]) -> Path:
    """Write ``lineage`` next to ``path`` atomically (a temporary file in the same folder, then one rename)."""
    target = sidecar_path(path)
    write_json_atomic(target, dict(lineage), indent=1, default=str)
    return target


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The lineage written next to ``path``, or None when there is none (a file made before lineage was recorded,
    or by hand). A sidecar that is not a lineage node is an error naming it."""
    target = sidecar_path(path)
    if not target.is_file():
        return None
    try:
        value = json.loads(target.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{target}: not a readable lineage file ({exc}); delete it and regenerate {Path(path).name} "
                         "to record its lineage again") from exc
    if not isinstance(value, dict) or "node" not in value or "reads" not in value:
        raise ValueError(f"{target}: not a lineage node (expected an object with 'node' and 'reads')")
    return value


# --------------------------------------------------------------------------------------------- the verdict
def _walk(root: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Mapping[str, Any]]]:
    here = (*path, str(root.get("name", root.get("node", "?"))))
    yield here, root
    for up in root.get("upstream") or []:
        if isinstance(up, Mapping):
            yield from _walk(up, here)


def leakage_verdict(root: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """``(leaks, unverified)`` of a test run's lineage ``root`` (its node, with every upstream node inside).

    A leak is a read in a leaking role that touched the test split the run was scored on; each is one sentence naming
    the stage chain, the role, the counts and the read's scope (a similarity view such as ``paired/*`` when the read
    only fed that view). Unverified: nodes checked against another test split, and inputs with no lineage record.
    """
    test = root.get("checked_against")
    leaks: list[str] = []
    unverified: list[str] = []
    for chain, item in _walk(root):
        where = " <- ".join(chain)  # from the run down to the stage that read
        for missing in item.get("missing") or []:
            unverified.append(f"{where}: {missing}")
        against = item.get("checked_against")
        comparable = same_test(against, test)
        for read in item.get("reads") or []:
            if not read.get("leaks"):
                continue
            n_videos, n_texts = read.get("test_videos"), read.get("test_texts")
            scope = f"view {read['scope']} only: " if read.get("scope") else ""
            if n_videos is None and n_texts is None:
                unverified.append(f"{scope}{where}: {read['role']} ({read.get('split')}) was not checked against a "
                                  "test split")
                continue
            if not (n_videos or n_texts):
                if not comparable:
                    unverified.append(f"{scope}{where}: {read['role']} ({read.get('dataset')}/{read.get('split')}) "
                                      f"was checked against {_describe(against)}, not this run's test split")
                continue
            parts = [f"{n_videos} test video{'s' if n_videos != 1 else ''}" if n_videos else "",
                     f"{n_texts} test text{'s' if n_texts != 1 else ''}" if n_texts else ""]
            counted = " and ".join(p for p in parts if p)
            other = "" if comparable else f" (of {_describe(against)}, not this run's test split)"
            detail = f" - {read['detail']}" if read.get("detail") else ""
            leaks.append(f"{scope}{where}: {read['role']} read {counted}{other} [{read.get('dataset')}/"
                         f"{read.get('split')}]{detail}")
    return _unique(leaks), _unique(unverified)


def _describe(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return "no test split"
    return f"{summary.get('dataset')}/{summary.get('split')} ({str(summary.get('videos_sha256', ''))[:8]})"


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def verdict_text(leakage: Sequence[str] | None, unverified: Sequence[str] | None = None) -> str:
    """One line for tables and logs: ``none``, or the leaks joined; unverified inputs after them."""
    text = "; ".join(leakage) if leakage else "none"
    if unverified:
        text += f" (unverified: {'; '.join(unverified)})"
    return text
