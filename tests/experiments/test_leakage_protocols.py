"""The committed leakage table (``results/leakage/protocols.json``, docs/reference/leakage.md) against the code
that makes it.

Fast: every method with a shipped experiment config has rows (or a stated reason in ``PENDING``), the rows are the
script's protocols, and every verdict is the text of the lists the run computed, each leak in the form the verdict
function writes. Slow: the script, run again, gives the committed verdicts, so the README table cannot drift from
the code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from datamodules.lineage import LEAKING_ROLES, verdict_text
from experiments import leakage_protocols as lp
from tests.run_helpers import REPO

TABLE = REPO / "results" / "leakage" / "protocols.json"
ROLE = "|".join(re.escape(r) for r in sorted(LEAKING_ROLES))
# what leakage_verdict writes for a leak: [view scope] chain from the test run down: role read counts [dataset/split]
COUNTS = r"(\d+ test videos?( and \d+ test texts?)?|\d+ test texts?)"
LEAK = re.compile(rf"^(view \S+ only: )?test of \w+( <- [^:]+)*: ({ROLE}) read {COUNTS}( \(of .+\))? "
                  r"\[[^\]/]+/[^\]]+\]( - .+)?$")


def _table() -> dict[str, Any]:
    return json.loads(TABLE.read_text())


def _methods_with_configs() -> dict[str, str]:
    """configs/experiments/<prefix>_*.yaml -> the method whose rows cover it."""
    out = {}
    for config in sorted((REPO / "configs" / "experiments").glob("*.yaml")):
        owners = [m for m, prefix in lp.METHOD_PREFIX.items() if config.stem.startswith(prefix + "_")]
        assert len(owners) == 1, f"{config.name}: add its method to METHOD_PREFIX in experiments/leakage_protocols.py"
        out[config.name] = owners[0]
    return out


def test_committed_table_covers_every_method_with_its_computed_verdicts() -> None:
    table = _table()
    rows = table["rows"]
    assert "only" not in table, "a partial run (--only) was committed; rerun the whole script"
    assert "uncommitted" not in table["commit"], "rerun the script on a committed tree"
    covered = {r["method"] for r in rows}
    pending = set(lp.PENDING)
    assert pending <= set(lp.METHOD_PREFIX)
    for config, method in _methods_with_configs().items():
        assert (method in covered) != (method in pending), f"{config}: {method} needs rows or a PENDING reason (one)"
    # the file holds exactly the script's protocols, in order, with their settings
    assert [(r["method"], r["protocol"], r["settings"]) for r in rows] == \
        [(p.method, p.name, p.settings) for p in lp.PROTOCOLS]
    for r in rows:
        assert r["verdict"] == verdict_text(r["leakage"], r["leakage_unverified"]), r["protocol"]
        assert r["leaks"] == len(r["leakage"]) and r["leaks_reported"] == sum(
            not leak.startswith("view ") for leak in r["leakage"]), r["protocol"]
        for leak in r["leakage"]:
            assert LEAK.match(leak), f"{r['protocol']}: not a computed leak: {leak!r}"
        assert all(isinstance(u, str) and u for u in r["leakage_unverified"])
        # the last command trained and tested what the record scores (CaRe-DPO: the pipeline that does both)
        assert r["commands"][-1].startswith(("python main.py fit ", "python -m experiments.care_dpo ")), r["protocol"]


def test_known_verdicts_of_the_constructed_protocols() -> None:
    """The protocols built to leak do, and the shipped defaults do not (the counts are the generated data's)."""
    by_name = {(r["method"], r["protocol"]): r for r in _table()["rows"]}
    clean = [("CLIP4Clip", "MSR-VTT default selection"), ("CLIP4Clip", "QB-Norm (metrics_qbnorm.json)"),
             # the whole chain: captions <- DG-DPO <- preference store <- the scorer's fit and the SFT captions
             ("CaRe-DPO", "retriever on the DG-DPO captions (the headline)")]
    assert all(by_name[key]["verdict"] == "none" for key in clean)
    on_test = by_name[("CLIP4Clip", "selection on the test split (CLIP4Clip's / NarVid's released code)")]
    assert on_test["leaks_reported"] == 1 and ": model selection read 6 test videos" in on_test["verdict"]
    for protocol in ("per_candidate, prompt A, `text_context: training`", "per_candidate, prompt C"):
        assert by_name[("Conical", protocol)]["leaks_reported"] == 0  # the paired view's leak only
    for protocol in ("per_candidate, prompt A, `text_context: any`", "per_candidate, text-only rewrite",
                     "paired (reported)"):
        assert by_name[("Conical", protocol)]["leaks_reported"] == 1


def test_a_record_without_lineage_is_an_error_naming_it(tmp_path: Path) -> None:
    record = tmp_path / "metrics.json"
    record.write_text(json.dumps({"metrics": {"t2v_R1": 1.0}}))
    protocol = lp.PROTOCOLS[0]
    with pytest.raises(lp.ProtocolError, match=r"metrics\.json: no 'lineage'"):
        lp.row(protocol, lp.Result(record, ["python main.py fit ..."]))
    leak = "test of CLIP4Clip <- fit of CLIP4Clip: model selection read 1 test video [msrvtt/val]"
    record.write_text(json.dumps({"lineage": {}, "leakage": [leak], "leakage_unverified": ["x.jsonl has no record"]}))
    out = lp.row(protocol, lp.Result(record, ["python main.py fit ..."]))
    assert out["verdict"] == f"{leak} (unverified: x.jsonl has no record)" and out["leaks"] == 1
    assert LEAK.match(leak)
    # a typed label is not a computed leak
    assert not LEAK.match("view paired/* only: test-time supplement from the paired video (declared)")


def test_only_refuses_a_method_without_protocols(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        lp.main(["--out", str(tmp_path / "t.json"), "--only", "CLIP4Clipp"])
    assert "no protocols for ['CLIP4Clipp']" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


@pytest.mark.slow
def test_the_script_gives_the_committed_verdicts(tmp_path: Path) -> None:
    committed = _table()
    fresh = lp.main(["--out", str(tmp_path / "protocols.json"), "--work", str(tmp_path / "work")])
    assert json.loads((tmp_path / "protocols.json").read_text())["rows"] == fresh["rows"]
    keys = ("method", "protocol", "settings", "verdict", "leaks", "leaks_reported", "leakage", "leakage_unverified")
    assert [{k: r[k] for k in keys} for r in fresh["rows"]] == [{k: r[k] for k in keys} for r in committed["rows"]]
