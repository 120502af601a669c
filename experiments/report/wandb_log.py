"""``--wandb``: the report as a W&B run (offline unless ``WANDB_MODE`` says otherwise).

Logged: every table of the report as a ``wandb.Table`` (``main_table``, ``paired_comparison``, ``robustness``, the
post-processed and sweep tables under their section's name), the per-query results of every run (group, seed,
query id, query text when the run's dataset can be read, ground-truth video id and rank, top-5 video ids) as
``per_query``, and the report folder (``report.md``, ``index.html``, ``plots/``, ``thumbs/``) as an artifact of
type ``report``. The run's config holds the command line's inputs and settings. ``WANDB_MODE`` is respected
(``offline`` when unset, as in the Makefile; ``online`` syncs at the end; an offline run is synced later with
``wandb sync <run dir>``); ``WANDB_DIR`` sets where the run folder goes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from experiments.report import browser
from experiments.results.render import Section, Table
from experiments.results.runs import Group

TABLE_KEYS = {"Main table": "main_table", "Paired comparison (bootstrap over queries)": "paired_comparison",
              "Robustness": "robustness", "Post-processed (test time)": "postprocessed"}
PER_QUERY_COLUMNS = ["group", "method", "dataset", "seed", "run", "query_id", "query_text", "gt_video_id", "gt_rank",
                     "top5_video_ids"]
REPORT_FILES = ("report.md", "index.html")
REPORT_DIRS = ("plots", "thumbs")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "table"


def report_tables(sections: list[Section]) -> dict[str, Table]:
    """Every table of the report under a W&B key: the section's key (``TABLE_KEYS`` or its slug), ``_2``... after."""
    out: dict[str, Table] = {}
    for s in sections:
        tables = [b for b in s.blocks if isinstance(b, Table)]
        base = TABLE_KEYS.get(s.title, _slug(s.title))
        for i, table in enumerate(tables):
            key = base if i == 0 else f"{base}_{i + 1}"
            if key in out:
                key = f"{key}_{len(out)}"
            out[key] = table
    return out


def per_query_rows(groups: list[Group]) -> list[list[Any]]:
    """One row per run and test query; texts from the run's dataset (``browser.load_view``), None if unreadable."""
    views: dict[str, dict[str, str]] = {}
    rows: list[list[Any]] = []
    for g in groups:
        for run in g.runs:
            key = browser._view_key(g)
            if key not in views:
                views[key] = browser.load_view(run.config).texts
            texts = views[key]
            test = run.test
            for row, text_id in enumerate(test.text_ids):
                top = [test.video_ids[j] for j in test.top(row, browser.TOP_K)]
                rows.append([g.ident, g.label, g.dataset, run.seed, str(run.path), text_id, texts.get(text_id),
                             test.video_ids[test.gt[row]], int(test.ranks[row]), ", ".join(top)])
    return rows


def artifact_name(out: Path) -> str:
    """W&B artifact names allow letters, digits, ``-``, ``_`` and ``.``."""
    return "report-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", out.resolve().name).strip("-") or "report")


def log(out: Path, sections: list[Section], groups: list[Group], project: str, name: str | None,
        config: dict[str, Any], matrices: bool = True) -> Path | None:
    """Log the written report in ``out`` to W&B; returns the run's local folder (None when W&B is disabled)."""
    import wandb

    mode = os.environ.get("WANDB_MODE") or "offline"
    run = wandb.init(project=project, name=name or out.resolve().name, job_type="report", config=config, mode=mode)
    try:
        logged: dict[str, Any] = {key: wandb.Table(columns=t.header, data=[[str(c) for c in r] for r in t.rows])
                                  for key, t in report_tables(sections).items()}
        if matrices:
            logged["per_query"] = wandb.Table(columns=PER_QUERY_COLUMNS, data=per_query_rows(groups))
        run.log(logged)  # one step: every table is media/table/<key>_0_<hash>.table.json in the run's files
        artifact = wandb.Artifact(artifact_name(out), type="report",
                                  description=f"python -m experiments.report output ({out})")
        for file in REPORT_FILES:
            if (out / file).is_file():
                artifact.add_file(str(out / file), name=file)
        for folder in REPORT_DIRS:
            if (out / folder).is_dir():
                artifact.add_dir(str(out / folder), name=folder)
        run.log_artifact(artifact)
        run.summary["groups"] = len(groups)
        run.summary["runs"] = sum(len(g.runs) for g in groups)
        folder = Path(run.dir).parent if mode != "disabled" else None
    finally:
        run.finish()
        # wandb-core writes the run's transaction log (run-<id>.wandb) in a service process that may outlive
        # finish(); tearing it down flushes the log, so the offline run folder is complete when this returns
        wandb.teardown()
    return folder
