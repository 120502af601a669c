"""Shared fixtures: offline environment and fake datasets in the real public file layouts."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from datamodules.readers import sample_frame_indices

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Property-based tests (hypothesis: the loaders, the importer, the caption store, the JSONL repair). `make test` runs
# the "vtr" profile: a fixed budget of HYPOTHESIS_EXAMPLES generated inputs per property, derandomized (the same
# inputs on every run and machine, so CI never fails at random) and without the example database (nothing written
# into the checkout). VTR_HYPOTHESIS_PROFILE=explore draws fresh random inputs, 10x as many, to hunt for new failures.
HYPOTHESIS_EXAMPLES = 50
_PROFILE = {"deadline": None, "database": None, "print_blob": True,
            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("vtr", max_examples=HYPOTHESIS_EXAMPLES, derandomize=True, **_PROFILE)
settings.register_profile("explore", max_examples=10 * HYPOTHESIS_EXAMPLES, derandomize=False, **_PROFILE)
settings.load_profile(os.environ.get("VTR_HYPOTHESIS_PROFILE", "vtr"))

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230), "yellow": (240, 220, 40),
           "white": (245, 245, 245), "purple": (150, 50, 200)}


def write_video(path: Path, colour: tuple[int, int, int], num_frames: int = 16, size: int = 32, seed: int = 0,
                ) -> None:
    """A tiny H.264 clip: a coloured square moving over noise (decodable by decord and PyAV)."""
    import av

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for i in range(num_frames):
            frame = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            x = int(i * (size - 10) / max(1, num_frames - 1))
            frame[10:20, x:x + 10] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_fake_msrvtt(root: Path, num_train: int = 12, num_test: int = 6, captions_per_video: int = 3) -> Path:
    """MSR-VTT layout: MSRVTT_data.json, MSRVTT_train.9k.csv, MSRVTT_JSFUSION_test.csv, videos/all/*.mp4."""
    names = list(COLOURS)
    videos, sentences = [], []
    ids = [f"video{i}" for i in range(num_train + num_test)]
    for i, vid in enumerate(ids):
        colour = names[i % len(names)]
        write_video(root / "videos" / "all" / f"{vid}.mp4", COLOURS[colour], seed=i)
        videos.append({"video_id": vid, "url": f"https://www.youtube.com/watch?v=parent{i // 2}",
                       "category": 0, "split": "train" if i < num_train else "test", "id": i})
        for k in range(captions_per_video):
            sentences.append({"caption": f"a {colour} square moves right take {k} clip {i}", "video_id": vid,
                              "sen_id": len(sentences)})
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    with (root / "MSRVTT_train.9k.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id"])
        w.writerows([[v] for v in ids[:num_train]])
    with (root / "MSRVTT_JSFUSION_test.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for j, vid in enumerate(ids[num_train:]):
            colour = names[(num_train + j) % len(names)]
            w.writerow([f"ret{j}", f"msr{j}", vid, f"a {colour} square moves right"])
    return root


@pytest.fixture(scope="session")
def fake_msrvtt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_msrvtt(tmp_path_factory.mktemp("msrvtt"))


@pytest.fixture(scope="session")
def narrated_msrvtt(fake_msrvtt: Path) -> Path:
    """Narration aligned with the 4 uniformly sampled frames of each 16-frame fake video."""
    data = json.loads((fake_msrvtt / "MSRVTT_data.json").read_text())
    frames = sample_frame_indices(16, 4, "uniform").tolist()
    lines = []
    for video in data["videos"]:
        colour = next(s["caption"].split()[1] for s in data["sentences"] if s["video_id"] == video["video_id"])
        lines.append(json.dumps({"video_id": video["video_id"], "kind": "narration", "prompt": "describe",
                                 "captions": [f"a {colour} square at frame {f}" for f in frames],
                                 "frame_indices": frames, "model": "test", "created": "2026-11-22T00:00:00"}))
    path = fake_msrvtt / "captions" / "narration_test.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return fake_msrvtt
