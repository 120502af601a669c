"""The leaderboard's bookkeeping: atomic JSON files, the work folder's lock, and the processes of a task.

A task (a caption step or a cell) runs with ``VTR_LEADERBOARD_TASK=<work folder>::<configuration>/<name>@<attempt>``
in its environment, which every process it starts inherits. When the leaderboard itself was killed (SIGKILL) its tasks'
processes may live on; the next ``--resume`` finds them by that variable (``/proc/<pid>/environ``), kills them before
it deletes and reruns their unfinished task, and so never runs two attempts of one task at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from datamodules.atomic import write_json_atomic

TASK_ENV = "VTR_LEADERBOARD_TASK"


class LeaderboardError(RuntimeError):
    """A refusal or a failed check; the message names the file or cell and what to do."""


def write_json(path: Path, value: Any) -> None:
    """``value`` as JSON (indented; a Path or another non-JSON value as its ``str``), written atomically."""
    write_json_atomic(path, value, default=str)


def read_json(path: Path, what: str) -> Any:
    """The JSON at ``path``, None when it does not exist; unreadable JSON is an error naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LeaderboardError(f"{path}: cannot read {what} ({err}); delete it and rerun with --resume") from err


@contextmanager
def work_lock(work: Path) -> Iterator[None]:
    """One leaderboard command per work folder at a time (a second one is refused, not queued)."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / ".leaderboard.lock"
    with path.open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise LeaderboardError(f"{path}: another leaderboard command is running on {work}; wait for it or stop "
                                   "it (its tasks end with it)") from err
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created), waited for: concurrent cells registering into one study."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def task_id(work: Path, key: str) -> str:
    """A task's identity: its work folder and its key (``default/narvid_s0``), so the tasks of two leaderboards in
    different work folders (a test beside a real run) are never taken for each other."""
    return f"{Path(work).resolve()}::{key}"


def new_attempt(task: str) -> str:
    """The value of ``TASK_ENV`` for one attempt of ``task``: ``<task>@<random hex>``."""
    return f"{task}@{uuid.uuid4().hex[:12]}"


def attempt_task(attempt: str) -> str:
    """The task of an attempt (everything before its last ``@``)."""
    return attempt.rsplit("@", 1)[0]


def task_processes(task: str, keep: str | None = None) -> list[int]:
    """Live processes (other than this one) whose environment names an attempt of ``task`` other than ``keep``."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: orphans cannot be found, and none are killed
        return []
    prefix = f"{TASK_ENV}={task}@".encode()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        for var in environ.split(b"\0"):
            if var.startswith(prefix) and (keep is None or var != f"{TASK_ENV}={keep}".encode()):
                found.append(int(entry.name))
                break
    return sorted(found)


def kill_task(task: str, keep: str | None = None, wait_s: float = 30.0) -> list[int]:
    """SIGKILL every process of an earlier attempt of ``task`` (see :func:`task_processes`) and wait until they are
    gone; returns their ids."""
    pids = task_processes(task, keep)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    left = [pid for pid in pids if _alive(pid)]
    if left:
        raise LeaderboardError(f"task {task}: processes {left} of an earlier attempt did not end after SIGKILL; "
                               "stop them by hand and rerun with --resume")
    return pids


def _alive(pid: int) -> bool:
    """Running (a zombie, killed but not yet reaped by its parent, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
