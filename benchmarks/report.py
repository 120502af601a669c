"""Time the comparison report on 10 fake runs with 1,000 x 1,000 similarity matrices.

    python -m benchmarks.report [--runs 10] [--size 1000] [--resamples 10000] [--keep DIR]

Writes two "methods" (CLIP4Clip meanP / seqTransf configs) x runs/2 seeds in the CSVLogger layout
(``<name>/version_0/{config.yaml, metrics.csv, test/...}``) into a temporary folder, with every artifact the
report reads (metrics.json consistent with the matrix, ids, ground truth, a 30-epoch metrics.csv), then times
``experiments.report.main`` on it in this process (including the matplotlib import) and prints the figure.
Target: under 30 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _metrics(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    out = {f"{prefix}_R{k}": float(np.mean(ranks <= k) * 100) for k in (1, 5, 10)}
    out[f"{prefix}_MdR"] = float(np.median(ranks))
    out[f"{prefix}_MnR"] = float(np.mean(ranks))
    return out


def fake_run(root: Path, name: str, header: str, seed: int, size: int, signal: float) -> None:
    rng = np.random.default_rng(seed * 100 + len(header))
    sim = rng.standard_normal((size, size), dtype=np.float32)
    sim[np.arange(size), np.arange(size)] += signal
    t2v = (sim >= np.diag(sim)[:, None]).sum(1)
    v2t = (sim.T >= np.diag(sim)[:, None]).sum(1)
    metrics = {**_metrics(t2v, "t2v"), **_metrics(v2t, "v2t")}
    metrics["rsum"] = sum(v for k, v in metrics.items() if "_R" in k and "MdR" not in k and "MnR" not in k)
    run = root / name / "version_0"
    (run / "test").mkdir(parents=True)
    np.save(run / "test" / "sim_t2v.npy", sim)
    (run / "test" / "text_ids.json").write_text(json.dumps([f"query{i}" for i in range(size)]))
    (run / "test" / "video_ids.json").write_text(json.dumps([f"video{i}" for i in range(size)]))
    (run / "test" / "text_to_video.json").write_text(json.dumps(list(range(size))))
    record = {"metrics": {**metrics, "num_texts": float(size), "num_videos": float(size)}, "num_texts": size,
              "num_videos": size, "complete": True, "method": "CLIP4Clip", "postprocess": "none", "seed": seed,
              "git_sha": "benchmark", "data": {"dataset": "msrvtt", "model_selection": "fake",
                                               "protocol": "1k-A (JSFusion csv)", "num_frames": 12},
              "world_size": 1, "precision": "bf16-mixed"}
    (run / "test" / "metrics.json").write_text(json.dumps(record))
    config = {"seed_everything": seed, "model": {"class_path": "lightning_modules.CLIP4Clip", "init_args": {
        "sim_header": header, "backbone": {"class_path": "lightning_modules.OpenCLIPBackbone",
                                           "init_args": {"model_name": "ViT-B-32", "pretrained": "openai"}}}},
        "data": {"class_path": "datamodules.MSRVTT", "init_args": {"root": "/data/msrvtt", "num_frames": 12}}}
    (run / "test" / "config.yaml").write_text(yaml.safe_dump(config))
    lines = ["epoch,step,train/loss,val/t2v_R1"]
    for epoch in range(30):
        lines += [f"{epoch},{epoch * 10 + s},{3 * np.exp(-epoch / 8) + rng.random() * 0.1:.4f}," for s in range(10)]
        lines.append(f"{epoch},{epoch * 10 + 9},,{40 * (1 - np.exp(-epoch / 6)) + rng.random():.3f}")
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, default=None, help="write runs and report here instead of a temp dir")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        runs = root / "runs"
        for i in range(args.runs):
            header = ("meanP", "seqTransf")[i % 2]
            fake_run(runs, f"{header}_s{i // 2}", header, i // 2, args.size, 2.5 if header == "meanP" else 2.7)
        started = time.perf_counter()
        from experiments.report import main as report

        report([str(runs), "--out", str(root / "report"), "--resamples", str(args.resamples)])
        seconds = time.perf_counter() - started
    print(f"report on {args.runs} runs of {args.size} x {args.size}, {args.resamples:,} resamples: {seconds:.1f} s")
    return seconds


if __name__ == "__main__":
    main()
