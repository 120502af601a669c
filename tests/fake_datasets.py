"""Fake MSVD / VATEX / DiDeMo datasets in the exact public file layouts (a few tiny H.264 clips each)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from tests.conftest import COLOURS, write_video

NAMES = list(COLOURS)


def _colour(i: int) -> tuple[str, tuple[int, int, int]]:
    name = NAMES[i % len(NAMES)]
    return name, COLOURS[name]


def _write_list(path: Path, ids: list[str]) -> None:
    path.write_text("".join(f"{i}\n" for i in ids))


MSVD_SPLITS = {"train": 4, "val": 2, "test": 3}


def make_fake_msvd(root: Path) -> dict[str, dict[str, int]]:
    """raw-captions.pkl (token lists) + {train,val,test}_list.txt + YouTubeClips/<id>.avi-style names.

    Returns the true counts per split: videos and captions (every caption is a query).
    """
    captions: dict[str, list[list[str]]] = {}
    counts: dict[str, dict[str, int]] = {}
    k = 0
    for split, n in MSVD_SPLITS.items():
        ids = []
        for _ in range(n):
            vid = f"clip{k:02d}_{k * 7}_{k * 7 + 5}"
            name, rgb = _colour(k)
            write_video(root / "YouTubeClips" / f"{vid}.avi", rgb, seed=k)
            captions[vid] = [f"a {name} square slides take {j} clip {k}".split() for j in range(3 + k % 3)]
            ids.append(vid)
            k += 1
        _write_list(root / f"{split}_list.txt", ids)
        counts[split] = {"videos": n, "texts": sum(len(captions[v]) for v in ids)}
    captions["unused_extra_video"] = [["not", "in", "any", "list"]]
    with (root / "raw-captions.pkl").open("wb") as fh:
        pickle.dump(captions, fh)
    return counts


VATEX_SPLITS = {"train": 4, "val": 2, "test": 3}


def make_fake_vatex(root: Path, layout: str = "vatex_data") -> dict[str, dict[str, int]]:
    """vatex_data.json (``id -> {"enCap", "chCap"}``) or the official ``vatex_*_v1.0.json`` lists, + the lists."""
    entries: dict[str, dict[str, list[str]]] = {}
    split_of: dict[str, str] = {}
    k = 0
    for split, n in VATEX_SPLITS.items():
        ids = []
        for _ in range(n):
            vid = f"yt{k:03d}abcdEF_{k:06d}_{k + 10:06d}"
            name, rgb = _colour(k)
            write_video(root / "videos" / f"{vid}.mp4", rgb, seed=k)
            entries[vid] = {"enCap": [f"a {name} square moves, caption {j} of clip {k}" for j in range(10)],
                            "chCap": ["一个方块" for _ in range(10)]}
            split_of[vid] = split
            ids.append(vid)
            k += 1
        _write_list(root / f"{split}_list.txt", ids)
    if layout == "vatex_data":
        (root / "vatex_data.json").write_text(json.dumps(entries, ensure_ascii=False))
    else:  # official: training json holds train, validation json holds val + test (the HGR split of it)
        for fname, splits in (("vatex_training_v1.0.json", {"train"}), ("vatex_validation_v1.0.json", {"val", "test"})):
            rows = [{"videoID": v, **e} for v, e in entries.items() if split_of[v] in splits]
            (root / fname).write_text(json.dumps(rows, ensure_ascii=False))
    return {s: {"videos": n, "texts": 10 * n} for s, n in VATEX_SPLITS.items()}


DIDEMO_SPLITS = {"train": 4, "val": 2, "test": 3}


def make_fake_didemo(root: Path) -> dict[str, dict[str, int]]:
    """{train,val,test}_data.json moment descriptions + lists of ids *with extension*; paragraph queries."""
    counts = {}
    k = 0
    for split, n in DIDEMO_SPLITS.items():
        ids, rows = [], []
        for _ in range(n):
            vid = f"{1000 + k}@N0{k % 9}_{5550 + k}.mp4"
            name, rgb = _colour(k)
            write_video(root / "videos" / vid, rgb, seed=k)
            for j in range(2 + k % 2):
                rows.append({"video": vid, "description": f"the {name} square moves part {j} of clip {k}",
                             "times": [[j, j + 1]], "annotation_id": len(rows), "dl_link": "", "num_segments": 6})
            ids.append(vid)
            k += 1
        (root / f"{split}_data.json").write_text(json.dumps(rows))
        _write_list(root / f"{split}_list.txt", ids)
        counts[split] = {"videos": n, "texts": n}  # one paragraph per video
    return counts
