"""Papers' published numbers (``configs/paper_results.csv``), matched to our groups by method and dataset.

They are shown in their own columns next to ours and never replace a measured value.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from experiments.results.runs import Group, ReportError
from vtr.resources import configs_dir

PAPER_CSV = configs_dir() / "paper_results.csv"
COLUMNS = ("method", "dataset", "backbone", "split", "metric", "value", "source")


@dataclass(frozen=True)
class PaperRow:
    method: str
    dataset: str
    backbone: str
    split: str
    metric: str
    value: float
    source: str


def load_papers(path: Path = PAPER_CSV) -> list[PaperRow]:
    """Every row, checked: the columns, a number in ``value`` and a non-empty ``source``."""
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise ReportError(f"{path}: header must be {','.join(COLUMNS)}, got {reader.fieldnames}")
            rows = []
            for line, row in enumerate(reader, start=2):
                try:
                    value = float(row["value"])
                except (TypeError, ValueError) as err:
                    raise ReportError(f"{path}:{line}: value {row['value']!r} is not a number") from err
                if not (row["source"] or "").strip():
                    raise ReportError(f"{path}:{line}: every paper number needs a source (paper + table)")
                rows.append(PaperRow(row["method"], row["dataset"], row["backbone"], row["split"], row["metric"],
                                     value, row["source"]))
            return rows
    except OSError as err:
        raise ReportError(f"{path}: cannot read the paper numbers ({err}); pass --papers or restore the file") from err


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def backbone_tag(text: str) -> str:
    """``ViT-B-32`` / ``ViT-B/32`` / ``openai ViT-B/32`` -> ``b32``; '' when no CLIP ViT size is named."""
    match = re.search(r"vit[-_ ]?([blhg])[-_/ ]?(\d+)", text.lower())
    return f"{match.group(1)}{match.group(2)}" if match else ""


def match_papers(group: Group, rows: list[PaperRow], backbone: str) -> list[PaperRow]:
    """Rows of the same dataset whose method words start ours (``CLIP4Clip`` and ``CLIP4Clip seqTransf`` match our
    ``CLIP4Clip seqTransf``; ``CLIP4Clip meanP`` does not), restricted to our backbone when both name a CLIP ViT
    size and the paper has that size."""
    ours = [_norm(w) for w in group.method.split()]
    found = []
    for r in rows:
        words = [_norm(w) for w in r.method.split()]
        if r.dataset == group.dataset and words and ours[:len(words)] == words:
            found.append(r)
    tag = backbone_tag(backbone)
    if tag and any(backbone_tag(r.backbone) == tag for r in found):
        found = [r for r in found if backbone_tag(r.backbone) in (tag, "")]
    return found


def paper_cell(found: list[PaperRow], metric: str = "t2v_R1") -> str:
    """``51.0 (NarVid, ViT-B/32, 1k-A)`` per matching row, or ``—``."""
    cells = [f"{r.value:g} ({r.method}, {r.backbone}, {r.split})" for r in found if r.metric == metric]
    return "; ".join(cells) if cells else "—"
