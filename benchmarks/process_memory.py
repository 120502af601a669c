"""Peak memory of the current process, for benchmarks that run each variant in a fresh subprocess."""

from __future__ import annotations

from pathlib import Path


def peak_rss_mib() -> float:
    """The process's peak resident set size (Linux ``VmHWM``) in MiB; NaN where /proc is unavailable."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return float("nan")
    for line in status.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
