"""Video specs: families of a base and mutants that differ in exactly one attribute, all unique."""

from __future__ import annotations

import json
from collections import defaultdict

from datamodules.synthvtr.specs import build_specs
from tests.datamodules.synthvtr.conftest import N_VIDEOS, TINY


def test_mutants_differ_from_base_in_exactly_one_attribute():
    def attributes(spec: dict) -> dict[str, object]:
        out: dict[str, object] = {"background": spec["background"], "n_objects": len(spec["objects"]),
                                  "event_type": spec["event"]["kind"], "event_to": spec["event"]["to_colour"],
                                  "event_obj": spec["event"]["obj"]}
        for i, o in enumerate(spec["objects"]):
            out.update({f"colour{i}": o["colour"], f"shape{i}": o["shape"], f"motion{i}": o["motion"]})
        return out

    families = defaultdict(list)
    keys = set()
    for spec in (s.to_json() for s in build_specs(TINY)):
        families[spec["family"]].append(spec)
        objs = sorted((o["colour"], o["shape"], o["motion"], i == spec["event"]["obj"])
                      for i, o in enumerate(spec["objects"]))
        keys.add(json.dumps([spec["background"], objs, spec["event"]["kind"], spec["event"]["to_colour"]]))
    assert len(keys) == N_VIDEOS, "every spec must be globally unique"
    assert len(families) == TINY.num_families
    for members in families.values():
        assert [m["member"] for m in members] == list(range(TINY.family_size))
        base = attributes(members[0])
        assert members[0]["mutation"] is None
        for m in members[1:]:
            diff = {k for k, v in attributes(m).items() if base[k] != v}
            if m["mutation"] == "event_type":  # a change event carries its colour; the others none
                diff.discard("event_to")
            assert len(diff) == 1, (m["mutation"], diff)
            (what,) = diff
            assert what.rstrip("0123456789") == m["mutation"]
            assert [o["anchor"] for o in m["objects"]] == [o["anchor"] for o in members[0]["objects"]] or (
                m["mutation"] == "motion")
