"""datamodules.preferences: the intra- and inter-video preference pairs of a preference store."""

from __future__ import annotations

import pytest

from datamodules.preferences import preference_pairs


# ---------------------------------------------------------------------------------------------- preference pairs
def _record(vid: str, relevance: list[float], neighbour: str, neighbour_relevance: list[float]) -> dict:
    return {"video_id": vid, "query": f"query of {vid}", "captions": [f"{vid}-c{k}" for k in range(len(relevance))],
            "ref_logprob": [-float(k + 1) for k in range(len(relevance))], "relevance": relevance,
            "neighbour_id": neighbour, "neighbour_captions": [f"{neighbour}-c{k}" for k in range(3)],
            "neighbour_ref_logprob": [-10.0, -11.0, -12.0], "neighbour_relevance": neighbour_relevance}


def test_intra_and_inter_pairs_on_a_tiny_store() -> None:
    records = [_record("v1", [0.1, 0.5, -0.2], "v2", [0.0, 0.3, 0.1]),
               _record("v2", [0.2, 0.2, 0.2], "v1", [0.4, -0.1, 0.0])]
    pairs, counts = preference_pairs(records, ("intra", "inter"))
    assert counts == {"intra": 1, "inter": 2, "intra_ties": 1, "inter_conflicts": 0}
    intra = [p for p in pairs if p.group == "intra"]
    assert [(p.chosen_video, p.chosen, p.chosen_ref, p.rejected_video, p.rejected, p.rejected_ref) for p in intra] == [
        ("v1", "v1-c1", -2.0, "v1", "v1-c2", -3.0)]
    inter = {p.chosen_video: p for p in pairs if p.group == "inter"}
    # v1's best caption against the neighbour's caption that best steals v1's query (neighbour_relevance max: c1)
    assert (inter["v1"].chosen, inter["v1"].rejected_video, inter["v1"].rejected, inter["v1"].rejected_ref) == (
        "v1-c1", "v2", "v2-c1", -11.0)
    # a tie keeps the first caption as the best one
    assert (inter["v2"].chosen, inter["v2"].rejected, inter["v2"].rejected_ref) == ("v2-c0", "v1-c0", -10.0)
    # v1's inter pair rejects v2-c1, which v2's own intra pair prefers: a conflict between the groups
    _, conflicting = preference_pairs([records[0], _record("v2", [0.1, 0.6, 0.2], "v1", [0.4, -0.1, 0.0])])
    assert conflicting["inter_conflicts"] == 1
    only_inter, counts = preference_pairs(records, ("inter",))
    assert {p.group for p in only_inter} == {"inter"} and counts["intra"] == 0


def test_preference_pairs_name_a_missing_key_and_bad_groups() -> None:
    record = _record("v1", [0.1, 0.5], "v2", [0.0, 0.3, 0.1])
    del record["neighbour_relevance"]
    assert len(preference_pairs([record], ("intra",))[0]) == 1
    with pytest.raises(KeyError, match=r"store.jsonl record 1 \(video 'v1'\) lacks \['neighbour_relevance'\]"):
        preference_pairs([record], ("intra", "inter"), where="store.jsonl")
    with pytest.raises(ValueError, match="groups must be"):
        preference_pairs([record], ("both",))
