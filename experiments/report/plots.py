"""Figures (matplotlib, Agg backend) returned as PNG bytes: training curves, R@1 against swept parameters,
histograms of the ground-truth rank."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from experiments.results.runs import Group, Run, fmt_value, short_key
from experiments.results.stats import mean_std


def _legend_label(group: Group) -> str:
    """Group id + a shortened label; the full label is in the report's tables."""
    label = group.label
    return f"{group.ident} {label if len(label) <= 45 else label[:44] + '…'}"


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def read_curves(run: Run) -> dict[str, list[tuple[float, float]]]:
    """The run's ``metrics.csv`` (or the registry's ``metrics.csv.gz``) -> {"train/loss": [(step, value)],
    "val/t2v_R1": [(epoch, value)]} (no file: empty lists)."""
    curves: dict[str, list[tuple[float, float]]] = {"train/loss": [], "val/t2v_R1": []}
    text = run.read_text("metrics.csv")
    if text is None:
        return curves
    for row in csv.DictReader(io.StringIO(text)):
        for key, x_key in (("train/loss", "step"), ("val/t2v_R1", "epoch")):
            value, x = row.get(key), row.get(x_key)
            if value not in (None, "") and x not in (None, ""):
                curves[key].append((float(x), float(value)))
    return curves


def training_curves(groups: list[Group]) -> bytes | None:
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 3.8))
    colours = plt.get_cmap("tab10")
    drawn = False
    for i, group in enumerate(groups):
        for j, run in enumerate(group.runs):
            curves = read_curves(run)
            label = _legend_label(group) if j == 0 else None
            for ax, key, marker in ((ax_loss, "train/loss", None), (ax_val, "val/t2v_R1", "o")):
                if curves[key]:
                    xs, ys = zip(*curves[key], strict=True)
                    ax.plot(xs, ys, color=colours(i % 10), alpha=0.8, marker=marker, markersize=3, label=label)
                    drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax_loss.set(xlabel="step", ylabel="train/loss", title="training loss (one line per run)")
    ax_val.set(xlabel="epoch", ylabel="val/t2v_R1 (%)", title="validation t2v R@1 per epoch")
    ax_val.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _png(fig)


def sweep_plots(groups: list[Group], params: list[str], metric: str = "t2v_R1") -> list[tuple[str, bytes]]:
    """R@1 (mean ± sample std over seeds) against each numeric swept parameter, one line per setting of the
    other swept parameters."""
    out = []
    for param in params:
        values = [g.config.get(param) for g in groups]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        others = [p for p in params if p != param]
        lines: dict[str, list[tuple[float, float, float]]] = {}
        for g in groups:
            key = ", ".join(f"{short_key(p)}={fmt_value(g.config.get(p))}" for p in others) or "all runs"
            mean, std = mean_std(g.values(metric))
            lines.setdefault(key, []).append((float(g.config[param]), mean, std or 0.0))
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for key, points in sorted(lines.items()):
            points.sort()
            xs, ys, es = zip(*points, strict=True)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=key)
        xs_all = [float(v) for v in values]
        if min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 10:
            ax.set_xscale("log")
        ax.set(xlabel=short_key(param), ylabel=f"test {metric} (%)",
               title=f"{metric} vs {short_key(param)} (mean ± std over seeds)")
        if len(lines) > 1:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        out.append((param, _png(fig)))
    return out


def rank_histograms(groups: list[Group]) -> bytes | None:
    """Ground-truth rank of every query, pooled over a group's seeds, as a fraction of its queries."""
    data = []
    for g in groups:
        ranks = np.concatenate([r.test.ranks for r in g.runs])
        data.append((g, ranks, len(g.runs[0].test.video_ids)))
    if not data:
        return None
    max_videos = max(n for _, _, n in data)
    if max_videos <= 50:
        bins = np.arange(0.5, max_videos + 1.5)
    else:
        bins = np.unique(np.round(np.logspace(0, math.log10(max_videos), 30)).astype(int)).astype(float) - 0.5
        bins = np.append(bins, max_videos + 0.5)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for g, ranks, _ in data:
        weights = np.full(len(ranks), 1.0 / len(ranks))
        ax.hist(ranks, bins=bins, weights=weights, histtype="step", linewidth=1.5, label=_legend_label(g))
    if max_videos > 50:
        ax.set_xscale("log")
    ax.set(xlabel="rank of the ground-truth video (1 = top)", ylabel="fraction of queries",
           title="ground-truth rank, all seeds pooled")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _png(fig)


def read_expert_usage(run: Run) -> dict[str, Any] | None:
    """A mixture-of-experts run's ``expert_usage.json`` (ExCae; in ``test/`` of a run folder), or None."""
    import json

    path = run.test_dir / "expert_usage.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def expert_usage_histograms(groups: list[Group]) -> bytes | None:
    """How often each expert is among a test video's active experts, per group (seeds summed), one panel each."""
    data = []
    for g in groups:
        usages = [u for u in (read_expert_usage(r) for r in g.runs) if u and u.get("experts")]
        if usages:
            counts = np.sum([[e["selected"] for e in u["experts"]] for u in usages], axis=0)
            data.append((g, counts, [e["group"] for e in usages[0]["experts"]]))
    if not data:
        return None
    fig, axes = plt.subplots(len(data), 1, figsize=(7, 1.9 * len(data)), squeeze=False)
    colours = {"captions": "tab:blue", "frames": "tab:orange", "both": "tab:green"}
    for ax, (g, counts, kinds) in zip(axes[:, 0], data, strict=True):
        ax.bar(range(len(counts)), counts / max(1, counts.sum()), color=[colours.get(k, "grey") for k in kinds])
        ax.set_title(_legend_label(g), fontsize=8)
        ax.set_ylabel("share", fontsize=8)
        ax.set_xticks(range(len(counts)))
    axes[-1, 0].set_xlabel("expert (blue: captions, orange: frames, green: both)")
    fig.tight_layout()
    return _png(fig)
