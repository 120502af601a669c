"""The machine a cell ran on and how busy it was meanwhile, so a timing from a shared machine says so.

``LoadSampler`` reads the 1-minute load average every ``interval_s`` seconds in a thread while a task runs. The state
is ``shared`` when the mean load exceeded the CPUs this process may use (other work competed for the cores, the
leaderboard's own parallel cells included), else ``not oversubscribed``; the numbers travel with the label.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import threading
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    found = re.search(r"^(?:model name|Model Name|cpu model)\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else (platform.processor() or platform.machine() or "unknown")


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gpus() -> list[str]:
    """Names of the CUDA devices this process sees (empty without CUDA)."""
    try:
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except (ImportError, RuntimeError):
        return []


class LoadSampler:
    """Samples ``os.getloadavg()[0]`` every ``interval_s`` seconds between ``start()`` and ``stop()``."""

    def __init__(self, interval_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self.samples.append(os.getloadavg()[0])
            except OSError:  # no load average on this platform
                return
            if self._stop.wait(self.interval_s):
                return

    def start(self) -> LoadSampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        """The machine record: CPU model and count, GPUs, the load samples' mean and max and the state label."""
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 1)
        cores = usable_cpus()
        mean = statistics.fmean(self.samples) if self.samples else None
        state = "unknown" if mean is None else "shared" if mean > cores else "not oversubscribed"
        return {"cpu_model": cpu_model(), "cpus": cores, "gpus": gpus(), "hostname": platform.node(),
                "load1_mean": None if mean is None else round(mean, 2),
                "load1_max": round(max(self.samples), 2) if self.samples else None,
                "load_samples": len(self.samples), "state": state}
