"""The in-memory benchmark (specs, captions and facts, no pixels) and its retrieval ceiling, the oracle.

Every caption records the facts it asserts, so the ambiguity of the captions sets a computable ceiling:
a perfect model ranks the test videos consistent with a query caption first, in random order
(:func:`oracle_recall`). The oracle is saved beside the videos (``synthvtr/oracle.json``) and reported
next to model numbers (docs/data/synthvtr.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from datamodules.synthvtr.captions import make_captions, video_facts
from datamodules.synthvtr.config import SynthVTRConfig
from datamodules.synthvtr.specs import VideoSpec, build_specs


def oracle_recall(caption_facts: Iterable[Sequence[Any]], video_facts: dict[str, Iterable[str]],
                  test_video_ids: Iterable[str], ks: Sequence[int] = (1, 5, 10)) -> dict[str, Any]:
    """The retrieval ceiling set by caption ambiguity, in percent.

    ``caption_facts`` holds ``(video_id, facts, ...)`` items (e.g. :class:`CaptionFacts`); captions of
    videos outside ``test_video_ids`` are ignored. For each query, ``n`` = number of test videos whose
    fact set contains all the caption's facts; a perfect model ranks those ``n`` first in random order,
    so R@K = min(1, K / n). Raises if a caption is inconsistent with its own video (a generator bug).
    """
    test_ids = list(dict.fromkeys(test_video_ids))
    test_set = set(test_ids)
    pool = [frozenset(video_facts[v]) for v in test_ids]
    counts = []
    for item in caption_facts:
        vid, facts = item[0], frozenset(item[1])
        if vid not in test_set:
            continue
        if not facts <= frozenset(video_facts[vid]):
            missing = sorted(facts - set(video_facts[vid]))
            raise ValueError(f"caption of {vid} asserts facts its video lacks: {missing}")
        counts.append(sum(1 for v in pool if facts <= v))
    if not counts:
        raise ValueError("no caption belongs to a test video")
    n = np.asarray(counts, dtype=np.float64)
    out: dict[str, Any] = {f"R@{k}": round(float(np.minimum(1.0, k / n).mean() * 100), 3) for k in ks}
    out.update({"mean_consistent": round(float(n.mean()), 4),
                "unique_pct": round(float((n == 1).mean() * 100), 3),
                "num_queries": len(counts), "num_videos": len(test_ids),
                "chance_R@1": round(100.0 / len(test_ids), 3)})
    return out


class CaptionFacts(NamedTuple):
    """A caption and its facts (``video_id`` and ``facts`` first, as :func:`oracle_recall` reads them)."""

    video_id: str
    facts: frozenset[str]
    sen_id: int
    caption: str


@dataclass
class SynthVTRData:
    """Specs, captions and facts of one config, without any pixels."""

    config: SynthVTRConfig
    specs: list[VideoSpec]
    captions: list[CaptionFacts]
    facts: dict[str, frozenset[str]] = field(default_factory=dict)

    def ids(self, split: str) -> list[str]:
        return [s.video_id for s in self.specs if s.split == split]

    def oracle(self) -> dict[str, Any]:
        """Oracle over all test captions, plus the JSFusion protocol (first caption per test video)."""
        test = self.ids("test")
        if not test:
            return {}
        out = oracle_recall(self.captions, self.facts, test)
        first: dict[str, CaptionFacts] = {}
        for c in self.captions:
            first.setdefault(c.video_id, c)
        out["first_caption"] = oracle_recall(first.values(), self.facts, test)
        out["protocol"] = ("R@K = mean over test captions of min(1, K / #test videos consistent with the "
                           "caption), in percent; first_caption = one query per test video "
                           "(MSRVTT_JSFUSION_test.csv)")
        return out


def build_synthvtr(config: SynthVTRConfig) -> SynthVTRData:
    """Specs, captions and facts for ``config`` in memory (fast: no rendering)."""
    specs = build_specs(config)
    captions: list[CaptionFacts] = []
    for spec in specs:
        for text, facts in make_captions(spec, config):
            captions.append(CaptionFacts(spec.video_id, facts, len(captions), text))
    return SynthVTRData(config, specs, captions, {s.video_id: video_facts(s) for s in specs})
