"""What a run's numbers depend on besides its config and seed: the code (commit and uncommitted changes) and what
decides the arithmetic (CPU and its instruction sets, library versions, threads, BLAS, GPU, determinism flags).

:func:`run_provenance` is what ``metrics.json`` records (``BaseRetrievalModule.test_record``) and what the runs that
drive other runs record beside their outputs (the CaRe-DPO pipeline's ``summary.json``, the CSI output, the sweep
runner's ``sweep.json``). Keys:

* ``source``: ``"git checkout"`` when the code was imported from the top of a git checkout, else ``"not a git
  checkout"`` (an installed copy, e.g. ``pip install .``), which then records ``installed_version``: the installed
  ``vtr`` distribution's version (``None`` when none is installed) and nothing about any commit;
* ``git_sha``: ``HEAD`` of the checkout the code was imported from (``"unknown"`` outside a git checkout);
* ``git_dirty``: whether tracked files differ from ``HEAD`` or untracked, non-ignored files exist (``None`` when
  git cannot tell);
* ``git_diff_sha256``: sha256 of ``git diff HEAD --binary`` plus every untracked, non-ignored file (its path and
  content), ``None`` when clean: two runs with the same sha and hash ran the same code;
* ``environment``: :func:`environment`.

The code state is read once per process, at the first call (``main.main`` calls :func:`source_state` before it
builds anything), so a file edited while a run trains does not change what that run records.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["REPO_ROOT", "environment", "git_state", "run_provenance", "source_state"]

REPO_ROOT = Path(__file__).resolve().parents[1]
# CPU features that change which kernels numpy, torch, OpenBLAS/MKL/oneDNN and x264 run, hence the rounding
_ISA_FLAGS = ("sse4_2", "avx", "fma", "f16c", "avx2", "avx_vnni", "avx512f", "avx512dq", "avx512bw", "avx512vl",
              "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
              "asimd", "asimddp", "sve", "sve2", "bf16", "i8mm")
# environment variables that change threads or kernels (MKL_CBWR: MKL's conditional numerical reproducibility)
_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
             "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OPENBLAS_CORETYPE",
             "NPY_DISABLE_CPU_FEATURES", "CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED")
_GIT_TIMEOUT_S = 30


def _git(root: Path, *args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, check=True, timeout=_GIT_TIMEOUT_S).stdout


def _not_a_checkout() -> dict[str, Any]:
    """The code state of an installed copy: no commit, no diff (nothing is guessed), the distribution's version."""
    try:
        version: str | None = importlib.metadata.version("vtr")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"source": "not a git checkout", "installed_version": version, "git_sha": "unknown", "git_dirty": None,
            "git_diff_sha256": None}


def git_state(root: str | Path = REPO_ROOT) -> dict[str, Any]:
    """``source``, ``git_sha``, ``git_dirty`` and ``git_diff_sha256`` of the checkout at ``root`` (read now, not
    cached). ``root`` must be the top of the checkout: an installed copy inside some other repository (a virtual
    environment in a project folder) is not a checkout of this code, and that repository's state is not recorded."""
    root = Path(root).resolve()
    try:
        top = Path(_git(root, "rev-parse", "--show-toplevel").decode().strip()).resolve()
        if top != root:
            return _not_a_checkout()
        sha = _git(root, "rev-parse", "HEAD").decode().strip()
        diff = _git(root, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff")
        untracked = [p for p in _git(root, "ls-files", "--others", "--exclude-standard", "-z").split(b"\0") if p]
    except (OSError, subprocess.SubprocessError):
        # not a checkout (an installed copy), no git, or git failed: say so rather than guess
        return _not_a_checkout()
    if not diff and not untracked:
        return {"source": "git checkout", "git_sha": sha, "git_dirty": False, "git_diff_sha256": None}
    digest = hashlib.sha256(diff)
    for rel in sorted(untracked):
        path = root / os.fsdecode(rel)
        digest.update(b"\0untracked\0" + rel + b"\0")
        if path.is_symlink():  # the link itself (e.g. a symlinked .venv), not what it points to
            digest.update(os.fsencode(os.readlink(path)))
        elif path.is_file():
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return {"source": "git checkout", "git_sha": sha, "git_dirty": True, "git_diff_sha256": digest.hexdigest()}


@functools.cache
def source_state() -> dict[str, Any]:
    """:func:`git_state` of this checkout, read at the first call in the process and kept."""
    return git_state(REPO_ROOT)


def _cpu() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    found = re.search(r"^(?:model name|Model Name|cpu model)\s*:\s*(.+)$", text, re.MULTILINE)
    if found:
        model = found.group(1).strip()
    listed = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.MULTILINE)
    if listed:
        flags = set(listed.group(1).split())
    elif sys.platform == "darwin":
        try:
            model = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                   timeout=5).stdout.strip() or model
        except (OSError, subprocess.SubprocessError):
            pass
    # a VM may show a generic model name ("AMD EPYC"): family/model/stepping and the hash of every flag still tell
    # two hosts apart
    ids = {k: m.group(1).strip() for k in ("cpu family", "model", "stepping")
           if (m := re.search(rf"^{k}\s*:\s*(.+)$", text, re.MULTILINE))}
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    import torch

    return {"model": model, "machine": platform.machine(),
            "signature": " ".join(f"{k} {v}" for k, v in ids.items()) or None,
            "isa": [f for f in _ISA_FLAGS if f in flags],
            "flags_sha256": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16] if flags else None,
            "logical_cpus": os.cpu_count(), "usable_cpus": affinity,
            # the kernels ATen dispatches to on this CPU (DEFAULT / AVX2 / AVX512 ...), what torch actually runs
            "torch_capability": torch.backends.cpu.get_cpu_capability()}


def _torch_build() -> dict[str, Any]:
    """BLAS / LAPACK and the CPU math libraries torch was built with (``torch.__config__``)."""
    import torch

    show = torch.__config__.show()
    info: dict[str, Any] = {}
    for key in ("BLAS_INFO", "LAPACK_INFO"):
        found = re.search(rf"\b{key}=([^,\s]+)", show)
        info[key.lower()] = found.group(1) if found else None
    for label, pattern in (("mkl", r"Math Kernel Library Version ([^\n]+)"), ("openmp", r"OpenMP (\d+)"),
                           ("onednn", r"(?:oneDNN|MKL-DNN)[^\n]*?(v[\d.]+)")):
        found = re.search(pattern, show)
        info[label] = found.group(1).strip() if found else None
    return info


def _numpy_blas() -> str | None:
    import numpy as np

    try:
        deps = np.show_config(mode="dicts")["Build Dependencies"]  # type: ignore[func-returns-value]
        blas = deps.get("blas", {})
        return f"{blas.get('name')} {blas.get('version')}".strip() or None
    except (KeyError, TypeError, AttributeError, ValueError):
        return None


def _gpu(trainer: Any | None) -> dict[str, Any] | None:
    device = getattr(getattr(trainer, "strategy", None), "root_device", None)
    if device is None or device.type != "cuda":
        return None
    import torch

    props = torch.cuda.get_device_properties(device)
    return {"name": props.name, "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1)}


def environment(trainer: Any | None = None) -> dict[str, Any]:
    """What decides the arithmetic of a run on this machine (``trainer``: the GPU it used, if any)."""
    import lightning
    import numpy as np
    import torch

    cudnn = torch.backends.cudnn
    return {
        "python": platform.python_version(),
        "os": platform.platform(terse=True),
        "cpu": _cpu(),
        "torch": torch.__version__, "numpy": np.__version__, "lightning": lightning.__version__,
        "torch_threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
        "blas": {**_torch_build(), "numpy": _numpy_blas()},
        "cuda": torch.version.cuda, "cudnn": cudnn.version() if cudnn.is_available() else None,
        "gpu": _gpu(trainer),
        "deterministic": {
            "algorithms": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_deterministic": bool(cudnn.deterministic), "cudnn_benchmark": bool(cudnn.benchmark),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_tf32": bool(cudnn.allow_tf32),
        },
        "env": {k: os.environ[k] for k in _ENV_VARS if k in os.environ},
    }


def run_provenance(trainer: Any | None = None) -> dict[str, Any]:
    """``source``, ``git_sha``, ``git_dirty``, ``git_diff_sha256`` (this process's code; ``installed_version`` for an
    installed copy) and ``environment``: see the module."""
    return {**source_state(), "environment": environment(trainer)}
