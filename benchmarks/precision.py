"""bf16-mixed vs float32: fit the same config in both precisions, and re-test the bf16 checkpoint in float32.

    python -m benchmarks.precision [--config configs/quickstart.yaml] [--out results/precision_synthvtr]
        [--seed 0] [--accelerator cpu] [-- extra LightningCLI arguments]

Three runs through the real CLI, written as run directories under ``--out`` (each ``test/metrics.json``):

* ``fp32``: ``fit`` with ``--trainer.precision 32-true``;
* ``bf16``: ``fit`` with ``--trainer.precision bf16-mixed``;
* ``bf16_retest_fp32``: ``test`` of the bf16 run's best checkpoint with ``32-true`` — the same weights, so the
  difference to ``bf16`` is the encoders' precision alone (evaluation scoring is float32 in both).

``summary.json`` holds the t2v/v2t R@1 of the three and the fit wall times. On CPU, bf16 autocast is slower
than float32 (no bf16 matrix units); the point here is correctness, on a GPU it is speed as well.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def _logger(out: Path, name: str) -> str:
    return json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                        "init_args": {"save_dir": str(out), "name": name, "version": 0}}])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "precision_synthvtr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accelerator", default="cpu")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]

    from vtr.lightning_cli import main as cli

    common = ["--config", args.config, "--seed_everything", str(args.seed),
              "--trainer.accelerator", args.accelerator, *extra]
    summary: dict = {"config": args.config, "seed": args.seed, "accelerator": args.accelerator, "extra": extra}
    best = ""
    for name, precision in (("fp32", "32-true"), ("bf16", "bf16-mixed")):
        started = time.perf_counter()
        run = cli(["fit", *common, "--trainer.precision", precision, "--trainer.logger", _logger(args.out, name)])
        summary[f"{name}_fit_seconds"] = round(time.perf_counter() - started, 1)
        if name == "bf16":
            best = run.trainer.checkpoint_callback.best_model_path
    cli(["test", *common, "--trainer.precision", "32-true", "--ckpt_path", best,
         "--trainer.logger", _logger(args.out, "bf16_retest_fp32")])
    for name in ("fp32", "bf16", "bf16_retest_fp32"):
        record = json.loads((args.out / name / "version_0" / "test" / "metrics.json").read_text())
        summary[name] = {k: record["metrics"][k] for k in ("t2v_R1", "t2v_R5", "v2t_R1", "rsum")}
        summary[name]["num_texts"] = record["num_texts"]
    summary["bf16_minus_retest_t2v_R1"] = round(summary["bf16"]["t2v_R1"] - summary["bf16_retest_fp32"]["t2v_R1"], 4)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
