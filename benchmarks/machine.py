"""What a benchmark's JSON records about the machine it ran on (the JSON is written with
``datamodules.atomic.write_json_atomic``).

A time measured while other jobs share the CPU is not comparable with one measured on an idle machine, so every
record says which it was: ``--machine-state idle|shared`` when the person running it knows, else ``auto``, which
calls the machine idle when the 1-minute load average before the run was below half a core.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import torch

MACHINE_STATES = ("auto", "idle", "shared")
IDLE_LOAD = 0.5  # load average (runnable processes) below which nothing else is competing for a core


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def machine_record(state: str, load_before: float, device: str) -> dict[str, Any]:
    """Machine facts for a benchmark JSON: state, load averages before and after, CPUs, torch threads, device."""
    if state not in MACHINE_STATES:
        raise ValueError(f"--machine-state {state!r}: use one of {MACHINE_STATES}")
    load_after = load_average()
    if state == "auto":
        state = "idle" if max(load_before, load_after) < IDLE_LOAD else "shared"
    record: dict[str, Any] = {"machine_state": state, "load_average_1min_before": load_before,
                              "load_average_1min_after": load_after,
                              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                              "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(0)
    record["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return record
