"""The papers' numbers (experiments/results/papers.py, configs/paper_results.csv)."""

from __future__ import annotations

import csv

from experiments.results.papers import COLUMNS, PAPER_CSV, load_papers


def test_paper_results_csv_schema() -> None:
    with PAPER_CSV.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        rows = list(reader)
    assert rows and len(load_papers()) == len(rows)
    for row in rows:
        assert row["source"].strip() and row["method"].strip() and row["backbone"].strip(), row
        assert float(row["value"]) >= 0
        assert row["dataset"] in {"msrvtt", "msvd", "vatex", "didemo", "activitynet"}, row
        assert row["metric"].split("_")[0] in {"t2v", "v2t"}, row
    key = {(r["method"], r["dataset"], r["backbone"], r["metric"]): float(r["value"]) for r in rows}
    assert key["CLIP4Clip seqTransf", "msrvtt", "ViT-B/32", "t2v_R1"] == 44.5
    assert key["NarVid", "msrvtt", "ViT-B/32", "t2v_R1"] == 51.0
    assert key["NarVid", "msrvtt", "ViT-B/16", "t2v_R1"] == 52.7
    assert key["Conical", "didemo", "ViT-B/16", "t2v_R1"] == 59.2
    assert not any(r["dataset"] == "synthvtr" for r in rows)
