"""benchmarks.machine: the machine facts a timing JSON records."""

from __future__ import annotations

import pytest

from benchmarks import machine
from benchmarks.machine import machine_record


def test_auto_state_is_idle_only_below_half_a_core_before_and_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "load_average", lambda: 0.1)
    assert machine_record("auto", 0.2, "cpu")["machine_state"] == "idle"
    assert machine_record("auto", 0.9, "cpu")["machine_state"] == "shared"  # busy before the run
    monkeypatch.setattr(machine, "load_average", lambda: 1.5)
    record = machine_record("auto", 0.0, "cpu")  # busy after it
    assert record["machine_state"] == "shared" and record["load_average_1min_after"] == 1.5


def test_a_stated_state_is_kept_and_the_record_names_the_machine() -> None:
    record = machine_record("idle", 3.0, "cpu")
    assert record["machine_state"] == "idle" and record["load_average_1min_before"] == 3.0
    assert record["cpus"] >= 1 and record["torch_threads"] >= 1 and record["device"] == "cpu" and "gpu" not in record


def test_an_unknown_state_is_refused_naming_the_flag() -> None:
    with pytest.raises(ValueError, match="--machine-state 'busy'"):
        machine_record("busy", 0.0, "cpu")
