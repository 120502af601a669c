"""Frozen-feature cache: the same config trained end to end (decode + frozen trunks every step) vs on cached
trunk outputs (cold: the cache is built first; warm: a second run reuses it, as ablations and seeds do).

Config: ``configs/quickstart.yaml`` (CLIP4Clip seqTransf, PretrainedTwoTower with frozen EfficientNet-Lite0
and MiniLM trunks, SynthVTR) made smaller with ``--families``; fit for ``--epochs`` epochs, then test.
Times come from ``EpochClock`` (below): fit = from the ``fit`` setup to the end of fit (the model's setup
builds or loads the cache, so it is included), per epoch = mean train epoch including its validation
loop, test = the test run that follows fit (it encodes/loads the test split). SynthVTR is generated before
the first timed run.

    python -m benchmarks.feature_cache [--families 60 --epochs 3 --workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


from lightning.pytorch.callbacks import Callback  # noqa: E402


class EpochClock(Callback):
    """Wall-clock marks of the fit and test phases and of every training epoch."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.epochs: list[float] = []

    def setup(self, trainer: object, pl_module: object, stage: str) -> None:
        self.marks[f"{getattr(stage, 'value', stage)}_start"] = time.perf_counter()

    def on_train_epoch_start(self, trainer: object, pl_module: object) -> None:
        self.marks["epoch"] = time.perf_counter()

    def on_train_epoch_end(self, trainer: object, pl_module: object) -> None:
        self.epochs.append(time.perf_counter() - self.marks["epoch"])

    def on_fit_end(self, trainer: object, pl_module: object) -> None:
        self.marks["fit_end"] = time.perf_counter()

    def on_test_end(self, trainer: object, pl_module: object) -> None:
        self.marks["test_end"] = time.perf_counter()


def run(mode: str, args: argparse.Namespace) -> dict[str, float]:
    from vtr.lightning_cli import main

    out = args.data / "runs" / mode
    shutil.rmtree(out, ignore_errors=True)
    cache = args.data / "cache"
    if mode == "cached-cold":
        shutil.rmtree(cache, ignore_errors=True)
    started = time.perf_counter()
    cli = main(["fit", "--config", str(ROOT / "configs" / "quickstart.yaml"),
                "--data.init_args.root", str(args.data), "--data.init_args.num_families", str(args.families),
                "--data.init_args.test_families", str(max(2, args.families // 5)),
                "--data.init_args.val_families", str(max(2, args.families // 10)),
                "--data.init_args.num_workers", str(args.workers),
                "--data.init_args.feature_cache", str(mode != "end-to-end").lower(),
                "--data.init_args.cache_dir", str(cache), "--trainer.max_epochs", str(args.epochs),
                "--trainer.logger", "false", "--trainer.default_root_dir", str(out),
                "--trainer.callbacks+=benchmarks.feature_cache.EpochClock", "--trainer.enable_progress_bar", "false"])
    total = time.perf_counter() - started
    clock = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "EpochClock")
    record = json.loads((out / "test" / "metrics.json").read_text())
    m = clock.marks
    return {"fit_s": m["fit_end"] - m["fit_start"], "epoch_s": sum(clock.epochs) / len(clock.epochs),
            "test_s": m["test_end"] - m["test_start"], "total_s": total,
            "t2v_R1": record["metrics"]["t2v_R1"], "videos": record["num_videos"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "data" / "bench_feature_cache")
    p.add_argument("--families", type=int, default=60)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    from datamodules import SynthVTR

    SynthVTR(root=str(args.data), num_families=args.families, test_families=max(2, args.families // 5)).prepare_data()
    rows = {mode: run(mode, args) for mode in ("end-to-end", "cached-cold", "cached-warm")}
    print(f"\nquickstart config, SynthVTR {args.families} families x 4 videos, {args.epochs} epochs, "
          f"{args.workers} workers, {os.cpu_count()} CPU cores\n")
    print("| run | fit incl. cache (s) | per epoch, train+val (s) | test (s) | total wall (s) | test t2v R@1 |")
    print("|---|---|---|---|---|---|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['fit_s']:.1f} | {r['epoch_s']:.1f} | {r['test_s']:.1f} | {r['total_s']:.1f} "
              f"| {r['t2v_R1']:.1f} |")


if __name__ == "__main__":
    main()
