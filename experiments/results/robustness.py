"""Robustness: does a paired comparison hold on every SynthVTR configuration the inputs were tested on?

A run's *configuration* is the SynthVTR generator it was tested on, named by the generator fingerprint that
``SynthVTR.describe`` records in ``test/metrics.json`` (``data.generator.fingerprint``; for a run without it, the
fingerprint of the generator settings in its ``config.yaml``). Groups on different configurations are *the same
setting* when everything else agrees: model class, dataset, test protocol, code version and every config value
other than the generator's knobs (``GENERATOR_KEYS``). For each pair of settings present together on at least two
configurations, the section lists ΔR@1 (t2v, pooled over seeds) with its paired-bootstrap interval on each
configuration and says "holds on both" (or "on all N") only when every interval excludes 0 on the same side.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from experiments.results.render import Section, Table
from experiments.results.runs import Group, Run, fmt_value
from experiments.results.stats import Comparison, compare, same_test_set

# SynthVTR arguments that set the generated benchmark (datamodules/synthvtr/datamodule.py) and the
# SynthVTRConfig field each becomes; val_families only moves families from training to validation, but it
# scales with family_size to keep the same number of validation videos, so it belongs to the configuration
GENERATOR_KEYS = {"num_families": "num_families", "family_size": "family_size", "test_families": "test_families",
                  "video_size": "image_size", "video_frames": "num_frames", "fps": "fps",
                  "captions_per_video": "captions_per_video", "detail": "detail", "generator_seed": "seed",
                  "one_sided_fraction": "one_sided_fraction", "val_families": None}
MAX_SETTINGS = 4  # without --compare, every pair of at most this many settings (6 pairs)


def _is_generator_key(key: str) -> bool:
    return key.startswith("data.init_args.") and key.split(".", 2)[2] in GENERATOR_KEYS


def run_configuration(run: Run) -> str | None:
    """The generator fingerprint of a SynthVTR run (None for another dataset or when it cannot be told)."""
    if run.dataset != "synthvtr":
        return None
    generator = run.record.get("data", {}).get("generator")
    if isinstance(generator, dict) and generator.get("fingerprint"):
        return str(generator["fingerprint"])
    args = run.config.get("data", {}).get("init_args") or {}
    try:
        from datamodules.synthvtr import SynthVTRConfig

        kwargs = {field_: args[key] for key, field_ in GENERATOR_KEYS.items() if field_ and key in args}
        return SynthVTRConfig(**kwargs).fingerprint()
    except (TypeError, ValueError):
        return None


def setting_key(group: Group) -> tuple:
    """What a group is apart from its SynthVTR configuration (its ``Group.key`` without the generator knobs)."""
    model_class, dataset, protocol, cfg, code = group.key
    return model_class, dataset, protocol, tuple(kv for kv in cfg if not _is_generator_key(kv[0])), code


@dataclass
class Configuration:
    """One SynthVTR generator among the inputs."""

    fingerprint: str
    ident: str = ""                                      # C1, C2, ...
    generator: dict[str, Any] = field(default_factory=dict)
    oracle_r1: float | None = None
    groups: list[Group] = field(default_factory=list)

    def describe(self) -> str:
        g = self.generator
        if not g:
            return f"`{self.fingerprint}`"
        parts = [f"{fmt_value(g.get('num_families', '?'))} families of {fmt_value(g.get('family_size', '?'))}",
                 f"detail {fmt_value(g.get('detail', '?'))}",
                 f"one-sided {fmt_value(g.get('one_sided_fraction', 0.0))}", f"seed {fmt_value(g.get('seed', '?'))}"]
        return f"`{self.fingerprint}` (" + ", ".join(parts) + ")"


@dataclass
class Row:
    """One pair of settings (A, B) and its comparison on each configuration where both were tested."""

    a: list[Group]
    b: list[Group]
    per_configuration: dict[str, Comparison]            # configuration ident -> A vs B there
    verdict: str = ""


def configurations(groups: list[Group]) -> list[Configuration]:
    found: dict[str, Configuration] = {}
    for g in groups:
        fp = run_configuration(g.runs[0])
        if fp is None:
            continue
        conf = found.setdefault(fp, Configuration(fp))
        conf.groups.append(g)
        record = g.runs[0].record.get("data", {})
        if not conf.generator and isinstance(record.get("generator"), dict):
            conf.generator = record["generator"]
        oracle = record.get("oracle")
        if conf.oracle_r1 is None and isinstance(oracle, dict) and isinstance(oracle.get("R@1"), (int, float)):
            conf.oracle_r1 = float(oracle["R@1"])
    ordered = sorted(found.values(), key=lambda c: min(int(g.ident[1:]) for g in c.groups))
    for i, conf in enumerate(ordered, 1):
        conf.ident = f"C{i}"
    return ordered


def verdict(a_label: str, b_label: str, by_conf: list[tuple[Configuration, Comparison]]) -> str:
    """"holds on both" / "holds on all N" when every pooled interval excludes 0 on the same side, else why not."""
    sides = {c.ident: 1 if cmp.pooled.low > 0 else -1 if cmp.pooled.high < 0 else 0 for c, cmp in by_conf}
    everywhere = "both" if len(by_conf) == 2 else f"all {len(by_conf)}"
    if len(set(sides.values())) == 1 and 0 not in sides.values():
        better = a_label if next(iter(sides.values())) > 0 else b_label
        return f"holds on {everywhere} ({better} better)"
    reasons = []
    deltas = [cmp.pooled.delta for _, cmp in by_conf]
    if any(d > 0 for d in deltas) and any(d < 0 for d in deltas):
        reasons.append("the sign of Δ differs (" + ", ".join(f"{cmp.pooled.delta:+.2f} on {c.ident}"
                                                           for c, cmp in by_conf) + ")")
    open_on = [ident for ident, side in sides.items() if side == 0]
    if open_on:
        reasons.append("the interval includes 0 on " + ", ".join(open_on))
    elif len(set(sides.values())) > 1:
        reasons.append("the intervals exclude 0 on opposite sides")
    return f"does not hold on {everywhere}: " + "; ".join(reasons)


def rows(groups: list[Group], confs: list[Configuration], pairs: list[tuple[Group, Group]] | None, resamples: int,
         seed: int) -> tuple[list[Row], list[str]]:
    """The compared pairs of settings across configurations, and notes on what was left out."""
    conf_of = {g.ident: c for c in confs for g in c.groups}
    by_setting: dict[tuple, dict[str, Group]] = {}
    for g in groups:
        if g.ident in conf_of:
            by_setting.setdefault(setting_key(g), {})[conf_of[g.ident].ident] = g
    notes: list[str] = []
    shared = [s for s, where in by_setting.items() if len(where) >= 2]
    across_code: dict[tuple, set[str]] = {}
    for s, where in by_setting.items():
        across_code.setdefault(s[:4], set()).update(where)
    if any(len(where) >= 2 for where in across_code.values()) and len(across_code) < len(by_setting) and not shared:
        notes.append("Some groups were tested on several configurations by different code versions (git sha): they "
                     "are kept apart, as everywhere in the report; pass `--merge-commits` to compare them.")
    if pairs:
        wanted = []
        for a, b in pairs:
            sa, sb = setting_key(a), setting_key(b)
            if sa in shared and sb in shared and sa != sb and (sa, sb) not in wanted and (sb, sa) not in wanted:
                wanted.append((sa, sb))
    elif len(shared) <= MAX_SETTINGS:
        wanted = list(itertools.combinations(shared, 2))
    else:
        notes.append(f"{len(shared)} settings were tested on several configurations: pass `--compare A B` for the "
                     "pairs to check (without it, every pair is checked when there are at most "
                     f"{MAX_SETTINGS}).")
        wanted = []
    out = []
    for sa, sb in wanted:
        on_both = [c for c in confs if c.ident in by_setting[sa] and c.ident in by_setting[sb]]
        usable = [c for c in on_both if same_test_set(by_setting[sa][c.ident], by_setting[sb][c.ident])]
        if len(usable) < 2:
            continue
        found = {c.ident: compare(by_setting[sa][c.ident], by_setting[sb][c.ident], resamples, seed) for c in usable}
        row = Row([by_setting[sa][c.ident] for c in usable], [by_setting[sb][c.ident] for c in usable], found)
        row.verdict = verdict("A", "B", [(c, found[c.ident]) for c in usable])
        out.append(row)
    return out, notes


def section(groups: list[Group], pairs: list[tuple[Group, Group]] | None, resamples: int, seed: int) -> Section | None:
    """The "Robustness" section, or None when no setting was tested on two SynthVTR configurations."""
    confs = configurations(groups)
    if len(confs) < 2:
        return None
    found, notes = rows(groups, confs, pairs, resamples, seed)
    if not found and not notes:
        return None
    conf_rows = [[c.ident, c.describe(), f"{c.oracle_r1:.1f}" if c.oracle_r1 is not None else "?",
                  ", ".join(g.ident for g in c.groups)] for c in confs]
    blocks: list[Any] = [
        "The same comparison on each SynthVTR configuration among the inputs (runs told apart by the generator "
        "fingerprint in `test/metrics.json`; groups that differ only in the generator's settings are the same "
        "method). ΔR@1 (T2V, points) = A − B with the pooled 95 % paired-bootstrap interval of \"Paired comparison\" "
        f"({resamples:,} resamples). A result *holds on both* configurations only when Δ has the same sign on each "
        "and every interval excludes 0.",
        Table(["configuration", "generator", "oracle T2V R@1", "groups"], conf_rows)]
    table_rows = []
    for row in found:
        label_a = row.a[0].method + " (" + ", ".join(g.ident for g in row.a) + ")"
        label_b = row.b[0].method + " (" + ", ".join(g.ident for g in row.b) + ")"
        cells = []
        for c in confs:
            cmp = row.per_configuration.get(c.ident)
            cells.append(f"{cmp.pooled.text()} ({len(cmp.seeds)} seed pair(s))" if cmp else "—")
        table_rows.append([label_a, label_b, *cells, row.verdict])
    if table_rows:
        blocks.append(Table(["A", "B", *(f"ΔR@1 on {c.ident} [95 % CI]" for c in confs), "verdict"], table_rows))
    blocks += notes
    return Section("Robustness", blocks)
