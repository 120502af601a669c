"""A cell's cost record (``costs.json`` in its registry folder; the table's cost columns read it).

- ``trainable_params``: counted by ``RunCosts`` when the cell's retriever starts fitting (``total_params`` beside it);
  a CaRe-DPO DG-DPO cell adds its captioner's (``captioner_trainable_params``, from the SFT stage's ``RunCosts``);
- ``train_step_ms``: the median over the fit of one training step (forward, backward, optimiser step), ``RunCosts``;
- ``eval``: ``RunCosts``' timed scoring of the test queries against 1,000 videos (the test videos' features repeated
  in order; ``eval.how`` says it exactly), in ms per query;
- ``captions``: how many captions per video the method reads (counted in the store), and what writing them cost:
  the wall time of the leaderboard's caption step (``simulated`` when SynthVTR's simulated captioner wrote them), or,
  for CaRe-DPO's DG-DPO captions, the pipeline's stages before its retriever (SFT, its captions, the scorer, sampling,
  scoring, DG-DPO, the DG-DPO captions; the times its stage markers record);
- ``wall_s``: the cell's own wall time (``cell``: the ``main.py fit`` process, or the CaRe-DPO retriever's stage), its
  captions' (``captions``) and their sum (``total``: what running the method once from a prepared copy costs);
- ``machine``: CPU model and count, GPUs, the 1-minute load average sampled while the cell ran and the label
  ``shared`` / ``not oversubscribed`` (``experiments/leaderboard/machine.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.leaderboard.plan import (
    CARE_CAPTION_STAGES,
    CARE_RETRIEVER_STAGE,
    STEP_BY_NAME,
    Cell,
    Settings,
)
from experiments.leaderboard.state import LeaderboardError, read_json

COSTS = "costs.json"


def captions_per_video(store: Path, kind: str) -> dict[str, Any]:
    """Records and the mean number of captions per video of ``kind`` in a caption store."""
    from datamodules.captions import CaptionStore

    records = CaptionStore.load(store, kind)
    if not records:
        raise LeaderboardError(f"{store}: no {kind} captions; the caption step did not write any")
    counts = [len(r.captions) for r in records.values()]
    return {"videos": len(counts), "per_video": round(sum(counts) / len(counts), 3)}


def step_marker(settings: Settings, cell: Cell, step: str) -> dict[str, Any]:
    path = settings.steps_dir(cell.configuration) / f"{step}.done.json"
    marker = read_json(path, "the caption step's record")
    if not isinstance(marker, dict) or not isinstance(marker.get("seconds"), (int, float)):
        raise LeaderboardError(f"{path}: step {step!r} has not finished; `python -m experiments.leaderboard run "
                               "--resume` runs it before the cells that read it")
    return marker


def _run_part(run_costs: dict[str, Any], where: Path) -> dict[str, Any]:
    missing = [k for k in ("trainable_params", "step_ms_median", "eval_gallery") if run_costs.get(k) is None]
    if missing:
        raise LeaderboardError(f"{where}: lacks {', '.join(missing)}; the cell ran without the RunCosts callback or "
                               "stopped before its test")
    return {"trainable_params": run_costs["trainable_params"], "total_params": run_costs.get("total_params"),
            "train_step_ms": run_costs["step_ms_median"], "train_steps": run_costs.get("train_steps"),
            "train_interval_ms": run_costs.get("interval_ms_median"), "eval": run_costs["eval_gallery"],
            "device": run_costs.get("device")}


def cell_costs(settings: Settings, cell: Cell, run_costs_path: Path, process_s: float, machine: dict[str, Any],
               data: dict[str, Any], summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cost record of a finished cell (see the module docstring)."""
    run_costs = read_json(run_costs_path, "the run's cost record")
    if not isinstance(run_costs, dict):
        raise LeaderboardError(f"{run_costs_path}: missing; the cell ran without the RunCosts callback")
    method = cell.method
    record: dict[str, Any] = {"cell": cell.name, "configuration": cell.configuration.name, "method": method.name,
                              "seed": cell.seed, **_run_part(run_costs, run_costs_path)}
    captions: dict[str, Any] = {"per_video": 0, "generation_s": 0.0, "simulated": None, "source": "none"}
    if method.captions is not None:
        step = STEP_BY_NAME[method.captions]
        marker = step_marker(settings, cell, step.name)
        captions = {**captions_per_video(Path(data["root"]) / step.store, step.kind),
                    "generation_s": marker["seconds"], "simulated": step.simulated, "source": step.what,
                    "store": step.store}
    if method.kind == "care":
        if summary is None or method.headline not in (summary.get("retrieval") or {}):
            raise LeaderboardError(f"{cell.key}: the CaRe-DPO summary has no {method.headline!r} retriever")
        timings = summary.get("timings_s") or {}
        stages = {s: timings.get(s) for s in (*CARE_CAPTION_STAGES[method.headline],
                                              CARE_RETRIEVER_STAGE[method.headline])}
        absent = [s for s, v in stages.items() if not isinstance(v, (int, float))]
        if absent:
            raise LeaderboardError(f"{cell.key}: the CaRe-DPO summary records no time for {', '.join(absent)}")
        if method.headline == "dgdpo-role":
            store = Path(summary["retrieval"][method.headline]["path"])  # .../retriever/<run>/run/test/metrics.json
            work = store.parents[4]
            dgdpo_store = work / "captions" / f"dgdpo-{summary['keys']['dgdpo']}.jsonl"
            sft_costs = read_json(work / "sft" / "run" / "run_costs.json", "the SFT stage's cost record") or {}
            captions = {**captions_per_video(dgdpo_store, "supplement"),
                        "generation_s": round(sum(stages[s] for s in CARE_CAPTION_STAGES[method.headline]), 1),
                        "simulated": False, "source": "the pipeline's DG-DPO captioner (SFT then DG-DPO; stages "
                        + ", ".join(CARE_CAPTION_STAGES[method.headline]) + ")"}
            record["captioner_trainable_params"] = sft_costs.get("trainable_params")
        cell_s = float(stages[CARE_RETRIEVER_STAGE[method.headline]])
        record["care_stages_s"] = stages
    else:
        cell_s = process_s
    record["captions"] = captions
    record["wall_s"] = {"cell": round(cell_s, 1), "captions": round(float(captions["generation_s"]), 1),
                        "total": round(cell_s + float(captions["generation_s"]), 1), "process": round(process_s, 1)}
    record["machine"] = machine
    record["data"] = {k: data[k] for k in ("fingerprint", "content_sha256")}
    return record
