"""The qualitative browser: sampled queries with their text, the top-5 videos as thumbnail strips, the ground truth
and its rank, near-duplicate confusions (SynthVTR families) and the videos' auxiliary captions.

What the run artifacts lack (texts, video files, aux captions, families) is read from the run's dataset as its
``test/config.yaml`` describes it, without building a model: the data module is instantiated from the config's
``data`` section and its ``load_split("test")`` parses the annotation files (the videos need not be on disk);
``video_path`` finds each file and the suite's reader (``datamodules/readers.py``, the config's ``reader``)
decodes 4 uniformly sampled frames into ``<out>/thumbs/<video_id>.jpg``, reused by later reports into the same
folder (``thumbs/index.json`` records each file's source video). A run whose data root is missing is shown by
ids, with a note in the page.

``index.html`` gets the sampled queries as JSON and ~100 lines of inline vanilla JavaScript that draw them: a
filter by group and by kind of query, and a side-by-side view of two groups on the same queries.
``report.md`` gets one table per group.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.atomic import atomic_write
from experiments.results.render import Raw, Section, Table, inline
from experiments.results.runs import Group, TestSet

TOP_K = 5
THUMB_FRAMES = 4
THUMB_SIZE = 80          # pixels per frame of a strip (the reader's short-side resize + centre crop)
AUX_SHOWN = 3            # aux captions shown per video and store
AUX_CHARS = 90           # ... each cut to this many characters
KINDS = ("worst", "best", "random")


def _clip(text: str, chars: int = AUX_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[:chars - 1] + "…"


# ---------------------------------------------------------------- the run's dataset
@dataclass
class DataView:
    """What the report could read from one run's dataset."""

    label: str
    texts: dict[str, str] = field(default_factory=dict)              # text id -> query text
    video_path: Callable[[str], Path] | None = None                    # None: no video files to decode
    reader: str = "pyav"
    aux: dict[str, tuple[str, dict[str, list[str]]]] = field(default_factory=dict)  # kind -> (path, id -> caps)
    families: dict[str, int] = field(default_factory=dict)            # SynthVTR: video id -> family
    is_synthvtr: bool = False
    notes: list[str] = field(default_factory=list)


def _instantiate(class_path: str, init_args: dict[str, Any]) -> Any:
    """The data module of a LightningCLI ``data`` section (``datamodules.MSRVTT`` or a bare ``MSRVTT``)."""
    from datamodules.base import VideoTextDataModule
    from lightning_modules.safe_load import resolve_class

    # a registered run folder may come from someone else: only the suite's data modules are imported and built
    cls = resolve_class(class_path, VideoTextDataModule, "the run's config.yaml [data.class_path]")
    return cls(**init_args)


def load_view(config: dict[str, Any]) -> DataView:
    """Texts by id, video files, aux captions and (SynthVTR) families of a run's test split; every failure
    becomes a note and the browser falls back to ids."""
    spec = config.get("data")
    if not isinstance(spec, dict) or not spec.get("class_path"):
        return DataView("?", notes=["the run has no config.yaml with a `data` section: queries shown by id, no "
                                    "thumbnails"])
    class_path = str(spec["class_path"])
    init_args = dict(spec.get("init_args") or {})
    name = class_path.rsplit(".", 1)[-1]
    root = init_args.get("root")
    if isinstance(root, str) and not Path(root).expanduser().is_dir():  # checked first: spares importing torch
        return DataView(name, notes=[f"{name}: data root `{root}` not found (a relative root is read from the "
                                     "current folder): queries shown by id, no thumbnails, aux captions or families"])
    try:
        dm = _instantiate(class_path, init_args)
    except Exception as err:  # anything a stale or foreign config can raise
        return DataView(class_path, notes=[f"`{class_path}` could not be built from the run's config "
                                           f"({type(err).__name__}: {err}): queries shown by id, no thumbnails"])
    view = DataView(f"{type(dm).__name__} at `{dm.root}`", video_path=dm.video_path, reader=str(dm.reader),
                    is_synthvtr=dm.name == "synthvtr")
    if not dm.root.is_dir():
        view.video_path = None
        view.notes.append(f"{type(dm).__name__}: data root `{dm.root}` not found (a relative root is read from the "
                          "current folder): queries shown by id, no thumbnails, aux captions or families")
        return view
    try:
        view.texts = {t.text_id: t.text for t in dm.load_split("test").texts}
    except Exception as err:
        view.notes.append(f"{view.label}: the test annotations could not be read ({type(err).__name__}: {err}): "
                          "queries shown by id")
    from datamodules.captions import CaptionStore

    for kind, path in dm.aux_captions.items():
        try:
            store = CaptionStore.load(path, kind)
        except Exception as err:
            view.notes.append(f"aux captions `{path}` ({kind}) unreadable ({type(err).__name__}: {err})")
            continue
        view.aux[kind] = (str(path), {vid: record.captions for vid, record in store.items()})
    if view.is_synthvtr:
        from datamodules.synthvtr import load_specs

        try:
            view.families = {s.video_id: s.family for s in load_specs(dm.root)}
        except Exception as err:
            view.notes.append(f"{view.label}: SynthVTR families unreadable ({type(err).__name__}: {err}): no "
                              "'same family' badges")
    return view


# ---------------------------------------------------------------- thumbnails
class Thumbnails:
    """``<out>/thumbs/<video_id>.jpg``: ``THUMB_FRAMES`` frames side by side, decoded with the suite's reader;
    a file already there for the same source video is reused."""

    def __init__(self, out: Path) -> None:
        self.dir = out / "thumbs"
        self.index_path = self.dir / "index.json"
        self.index: dict[str, str] = {}
        if self.index_path.is_file():
            try:
                self.index = dict(json.loads(self.index_path.read_text()))
            except (OSError, ValueError, TypeError):
                self.index = {}
        self.made = self.reused = 0
        self.failures: list[str] = []
        self._memo: dict[str, str | None] = {}
        self._readers: dict[str, Any] = {}

    def _reader(self, name: str) -> Any:
        if name not in self._readers:
            from datamodules.readers import build_reader

            chosen = name
            if name == "decord":
                try:
                    import decord  # noqa: F401
                except ImportError:
                    chosen = "pyav"
            self._readers[name] = build_reader(chosen, THUMB_SIZE)  # type: ignore[arg-type]
        return self._readers[name]

    def _make(self, path: Path, reader: str, target: Path) -> None:
        from PIL import Image

        frames = self._reader(reader).read_sampled(path, THUMB_FRAMES, "uniform")[0]  # uint8 [T, 3, S, S]
        t, _, s, _ = frames.shape
        strip = frames.permute(2, 0, 3, 1).reshape(s, t * s, 3).numpy()
        self.dir.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(np.ascontiguousarray(strip))
        atomic_write(target, lambda fh: image.save(fh, format="JPEG", quality=80))

    def get(self, video_id: str, path: Path, reader: str) -> str | None:
        """Relative ``src`` of the video's strip (``thumbs/...``), or None when it cannot be decoded."""
        key = str(Path(path).resolve())
        if key in self._memo:
            return self._memo[key]
        name = re.sub(r"[^A-Za-z0-9._-]", "_", video_id) + ".jpg"
        if self.index.get(name, key) != key:  # another video with this id (another dataset) owns the name
            name = f"{name[:-4]}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.jpg"
        target = self.dir / name
        if target.is_file() and self.index.get(name, key) == key:
            self.reused += 1
        else:
            try:
                self._make(Path(path), reader, target)
            except Exception as err:  # a missing or broken file: the page says so instead of an image
                self.failures.append(f"{video_id}: {type(err).__name__}: {err}")
                self._memo[key] = None
                return None
            self.made += 1
        self.index[name] = key
        self._memo[key] = f"thumbs/{name}"
        return self._memo[key]

    def save(self) -> None:
        if self.index:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.index_path.write_text(json.dumps(self.index, indent=1, sort_keys=True))


# ---------------------------------------------------------------- sampling
def sample_queries(test: TestSet, per_kind: int, seed: int) -> list[tuple[str, int]]:
    """(kind, row) of the ``per_kind`` worst and best queries by ground-truth rank and ``per_kind`` random others
    (seeded); small test sets are split in three."""
    order = np.lexsort((np.arange(len(test.ranks)), test.ranks)).tolist()
    k = min(per_kind, len(order) // 3) if len(order) < 3 * per_kind else per_kind
    best, worst = order[:k], order[::-1][:k]
    taken = set(best) | set(worst)
    rest = [i for i in order if i not in taken]
    rng = np.random.default_rng(seed)
    sample = sorted(rng.choice(rest, size=min(per_kind, len(rest)), replace=False).tolist()) if rest else []
    return [("worst", i) for i in worst] + [("best", i) for i in best] + [("random", int(i)) for i in sample]


# ---------------------------------------------------------------- the browser data
def _view_key(group: Group) -> str:
    return json.dumps(group.runs[0].config.get("data"), sort_keys=True, default=str)


@dataclass
class _QuerySet:
    """Groups tested on the same texts and videos: their sampled queries can be put side by side."""

    members: list[Group]
    view: DataView
    texts: dict[str, int] = field(default_factory=dict)       # text id -> index in payload["texts"]
    videos: dict[str, int] = field(default_factory=dict)      # video id -> index in payload["videos"]
    payload: dict[str, Any] = field(default_factory=lambda: {"texts": [], "videos": [], "stores": [],
                                                             "queries": [], "families": False})


def build(groups: list[Group], seed: int, per_kind: int, out: Path, thumbnails: bool = True,
          ) -> tuple[dict[str, Any], list[Any]]:
    """The JSON the page draws and the markdown blocks (one table per group)."""
    views: dict[str, DataView] = {}
    thumbs = Thumbnails(out) if thumbnails else None
    sets: dict[tuple, _QuerySet] = {}
    for g in groups:
        key = _view_key(g)
        if key not in views:
            views[key] = load_view(g.runs[0].config)
        test = g.runs[0].test
        set_key = (g.dataset, tuple(sorted(test.text_ids)), tuple(sorted(test.video_ids)))
        qs = sets.setdefault(set_key, _QuerySet([], views[key]))
        qs.members.append(g)
        if not qs.view.texts and views[key].texts:  # the texts and videos come from a member that could read them
            qs.view = views[key]

    payload_groups: list[dict[str, Any]] = []
    markdown: list[Any] = []
    notes: list[str] = []
    for set_index, qs in enumerate(sets.values()):
        pay = qs.payload
        pay["families"] = bool(qs.view.families)

        def video(vid: str, qs: _QuerySet = qs) -> int:
            if vid not in qs.videos:
                qs.videos[vid] = len(qs.payload["videos"])
                view = qs.view
                src = None
                if thumbs is not None and view.video_path is not None:
                    src = thumbs.get(vid, view.video_path(vid), view.reader)
                qs.payload["videos"].append({"id": vid, "thumb": src, "family": view.families.get(vid), "aux": {}})
            return qs.videos[vid]

        def text(tid: str, qs: _QuerySet = qs) -> int:
            if tid not in qs.texts:
                qs.texts[tid] = len(qs.payload["texts"])
                qs.payload["texts"].append([tid, qs.view.texts.get(tid)])
            return qs.texts[tid]

        # every member's sample, then every member's results on the union (the side-by-side view needs them)
        kinds: dict[str, dict[str, str]] = {}
        for g in qs.members:
            test = g.runs[0].test
            for kind, row in sample_queries(test, per_kind, seed):
                kinds.setdefault(test.text_ids[row], {})[g.ident] = kind
        stores: dict[str, int] = {}
        group_stores: dict[str, list[int]] = {}
        for g in qs.members:
            own = views[_view_key(g)]
            group_stores[g.ident] = []
            for kind, (path, _) in own.aux.items():
                if path not in stores:
                    stores[path] = len(pay["stores"])
                    pay["stores"].append([kind, path])
                group_stores[g.ident].append(stores[path])
        rows = {g.ident: {t: i for i, t in enumerate(g.runs[0].test.text_ids)} for g in qs.members}
        for tid, picked in kinds.items():
            query: dict[str, Any] = {"t": text(tid), "kinds": picked, "res": {}}
            for g in qs.members:
                test = g.runs[0].test
                row = rows[g.ident][tid]
                top = test.top(row, TOP_K)
                query["gt"] = video(test.video_ids[test.gt[row]])
                # four significant digits: what the registry keeps of a score (registry.SCORE_BITS)
                query["res"][g.ident] = [int(test.ranks[row]), [video(test.video_ids[j]) for j in top],
                                         [float(f"{s:.4g}") for s in test.top_scores(row, TOP_K)]]
            pay["queries"].append(query)
        # aux captions of the shown videos, from every store a member used
        all_aux = {path: caps for g in qs.members for path, caps in views[_view_key(g)].aux.values()}
        for entry in pay["videos"]:
            for path, index in stores.items():
                caps = all_aux[path].get(entry["id"])
                if caps:
                    entry["aux"][str(index)] = [_clip(c) for c in caps[:AUX_SHOWN]]
        for g in qs.members:
            run = g.runs[0]
            payload_groups.append({"id": g.ident, "label": g.label, "dataset": g.dataset, "seed": run.seed,
                                   "run": str(run.path), "set": set_index, "stores": group_stores[g.ident]})
            markdown += _markdown_table(g, qs, kinds, rows[g.ident])
        for key in dict.fromkeys(_view_key(g) for g in qs.members):
            who = ", ".join(g.ident for g in qs.members if _view_key(g) == key)
            notes += [f"{who}: {n}" for n in views[key].notes]
    if thumbs is not None:
        thumbs.save()
        if thumbs.failures:
            notes.append(f"{len(thumbs.failures)} video(s) could not be decoded for a thumbnail, e.g. "
                         + "; ".join(thumbs.failures[:3]))
    payload = {"k": TOP_K, "groups": sorted(payload_groups, key=lambda g: int(g["id"][1:])),
               "sets": [qs.payload for qs in sets.values()], "notes": notes,
               "thumbs": {"made": thumbs.made, "reused": thumbs.reused} if thumbs else None}
    return payload, markdown


def _markdown_table(group: Group, qs: _QuerySet, kinds: dict[str, dict[str, str]], rows_of: dict[str, int],
                    ) -> list[Any]:
    run = group.runs[0]
    test = run.test
    rows = []
    for kind in KINDS:
        for tid, picked in kinds.items():
            if picked.get(group.ident) != kind:
                continue
            row = rows_of[tid]
            gt = test.video_ids[test.gt[row]]
            gt_family = qs.view.families.get(gt)
            top = []
            for j in test.top(row, TOP_K):
                vid = test.video_ids[j]
                if vid == gt:
                    top.append(f"**{vid}**")
                elif gt_family is not None and qs.view.families.get(vid) == gt_family:
                    top.append(f"{vid} (same family)")
                else:
                    top.append(vid)
            rows.append([kind, tid, _clip(qs.view.texts.get(tid) or "—", 120), str(int(test.ranks[row])), gt,
                         ", ".join(top)])
    return [f"{group.ident} {group.label}, seed {run.seed} (`{run.path}`)",
            Table(["kind", "text id", "query", "GT rank", "GT video", "top-5 videos"], rows)]


# ---------------------------------------------------------------- the section
SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("qb-data").textContent);
  var list = document.getElementById("qb-list"), status = document.getElementById("qb-status");
  var sel = {group: document.getElementById("qb-group"), kind: document.getElementById("qb-kind"),
             a: document.getElementById("qb-a"), b: document.getElementById("qb-b"),
             compare: document.getElementById("qb-compare")};
  var byId = {};
  data.groups.forEach(function (g) { byId[g.id] = g; });
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function figure(set, g, q, vi, label) {
    var v = set.videos[vi], isGt = vi === q.gt, gtFamily = set.videos[q.gt].family;
    var fam = set.families && !isGt && v.family !== null && v.family === gtFamily;
    var f = el("figure", "qb-v" + (isGt ? " qb-gt" : "") + (fam ? " qb-fam" : ""));
    if (v.thumb) {
      var img = el("img");
      img.src = v.thumb;
      img.alt = v.id;
      f.appendChild(img);
    } else {
      f.appendChild(el("div", "qb-nothumb", "no thumbnail"));
    }
    var cap = el("figcaption");
    cap.appendChild(el("span", "qb-pos", label + " "));
    cap.appendChild(el("code", null, v.id));
    if (isGt) { cap.appendChild(el("span", "qb-badge qb-badge-gt", "ground truth")); }
    if (fam) { cap.appendChild(el("span", "qb-badge qb-badge-fam", "same family")); }
    f.appendChild(cap);
    g.stores.forEach(function (s) {
      var caps = v.aux[String(s)];
      if (!caps) { return; }
      var ul = el("ul", "qb-aux");
      ul.title = set.stores[s][0] + ": " + set.stores[s][1];
      caps.forEach(function (c) { ul.appendChild(el("li", null, set.stores[s][0] + ": " + c)); });
      f.appendChild(ul);
    });
    return f;
  }
  function results(set, g, q) {
    var r = q.res[g.id], box = el("div", "qb-top");
    r[1].forEach(function (vi, i) { box.appendChild(figure(set, g, q, vi, "#" + (i + 1) + " · " + r[2][i])); });
    if (r[0] > data.k) { box.appendChild(figure(set, g, q, q.gt, "rank " + r[0])); }
    return box;
  }
  function queryHead(set, q, extra) {
    var t = set.texts[q.t], h = el("div", "qb-head");
    h.appendChild(el("span", "qb-text", t[1] === null ? "(text unavailable)" : "\u201c" + t[1] + "\u201d"));
    h.appendChild(el("code", null, t[0]));
    h.appendChild(el("span", "qb-meta", extra));
    return h;
  }
  function kindOk(kind) { return !sel.kind.value || kind === sel.kind.value; }
  function browse() {
    var shown = 0;
    data.groups.forEach(function (g) {
      if (sel.group.value && g.id !== sel.group.value) { return; }
      var set = data.sets[g.set];
      list.appendChild(el("h3", "qb-group", g.id + " " + g.label + " (" + g.dataset + ", seed " + g.seed + ")"));
      set.queries.forEach(function (q) {
        var kind = q.kinds[g.id];
        if (!kind || !kindOk(kind)) { return; }
        var card = el("div", "qb-card");
        card.dataset.group = g.id;
        card.dataset.kind = kind;
        card.appendChild(queryHead(set, q, kind + " · ground truth at rank " + q.res[g.id][0]));
        card.appendChild(results(set, g, q));
        list.appendChild(card);
        shown += 1;
      });
    });
    return shown + " queries";
  }
  function compare() {
    var a = byId[sel.a.value], b = byId[sel.b.value];
    if (a.set !== b.set) { return a.id + " and " + b.id + " were tested on different test sets: no common query"; }
    var set = data.sets[a.set], shown = 0;
    set.queries.forEach(function (q) {
      var ka = q.kinds[a.id], kb = q.kinds[b.id];
      if (!((ka && kindOk(ka)) || (kb && kindOk(kb)))) { return; }
      var card = el("div", "qb-card qb-pair");
      card.appendChild(queryHead(set, q, [ka ? ka + " for " + a.id : "", kb ? kb + " for " + b.id : ""]
        .filter(Boolean).join(", ")));
      var cols = el("div", "qb-cols");
      [a, b].forEach(function (g) {
        var col = el("div", "qb-col");
        col.dataset.group = g.id;
        col.appendChild(el("div", "qb-colhead", g.id + " " + g.label + ": ground truth at rank " + q.res[g.id][0]));
        col.appendChild(results(set, g, q));
        cols.appendChild(col);
      });
      card.appendChild(cols);
      list.appendChild(card);
      shown += 1;
    });
    return shown + " queries, " + a.id + " next to " + b.id;
  }
  function render() {
    list.textContent = "";
    sel.group.disabled = sel.compare.checked;
    status.textContent = sel.compare.checked ? compare() : browse();
  }
  data.groups.forEach(function (g, i) {
    [sel.group, sel.a, sel.b].forEach(function (s) {
      var o = el("option", null, g.id + " " + g.label);
      o.value = g.id;
      s.appendChild(o);
    });
    if (i === 1) { sel.b.value = g.id; }
  });
  [sel.group, sel.kind, sel.a, sel.b, sel.compare].forEach(function (s) { s.addEventListener("change", render); });
  render();
})();
"""


def _controls(num_groups: int) -> str:
    compare = ("<span class='qb-sep'>|</span><label><input type='checkbox' id='qb-compare'> compare side by side"
               "</label> <select id='qb-a'></select> with <select id='qb-b'></select>")
    if num_groups < 2:  # nothing to compare: the script still finds the (hidden) controls
        compare = f"<span hidden>{compare}</span>"
    return ("<div id='qb-controls'><label>group <select id='qb-group'><option value=''>all groups</option>"
            "</select></label> <label>queries <select id='qb-kind'><option value=''>worst, best, random</option>"
            + "".join(f"<option value='{k}'>{k}</option>" for k in KINDS)
            + f"</select></label> {compare} <span id='qb-status'></span></div>")


def section(groups: list[Group], seed: int, per_kind: int, out: Path, thumbnails: bool = True) -> Section:
    payload, markdown = build(groups, seed, per_kind, out, thumbnails)
    intro = (f"Per group, its lowest-seed run: the {per_kind} worst, {per_kind} best and {per_kind} random queries "
             "(seeded) by rank of the ground-truth video, with the top-5 videos (similarity after the rank). Query "
             "texts, videos, aux captions and SynthVTR families are read from each run's dataset "
             "(`test/config.yaml`'s `data` section); thumbnails are 4 uniformly sampled frames "
             "(`thumbs/`, reused when present).")
    notes = payload["notes"] or []
    # no "<" inside the script element (a "</script>" or "<!--" in a caption would end or derail it)
    data = json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")
    legend = ("<p class='qb-legend'><span class='qb-badge qb-badge-gt'>ground truth</span> the query's video "
              "(also shown after the top-5 when it ranks lower); <span class='qb-badge qb-badge-fam'>same family"
              "</span> a SynthVTR near-duplicate of the ground truth.</p>")
    page = ("<div id='qb'>" + legend + "".join(f"<p class='qb-note'>{inline(n)}</p>" for n in notes)
            + _controls(len(groups)) + "<div id='qb-list'></div>"
            + "<noscript>The query browser needs JavaScript; report.md holds the same queries as tables."
            "</noscript>" + f"<script type='application/json' id='qb-data'>{data}</script>"
            + f"<script>{SCRIPT}</script></div>")
    md_blocks = [*(f"Note: {n}" for n in notes), *markdown]
    return Section("Qualitative: sample queries", [intro, Raw(page, md_blocks)])
