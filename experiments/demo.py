"""`make demo`: CLIP4Clip on SynthVTR with the offline pretrained two-tower backbone, end to end.

1. generate SynthVTR (800 videos as H.264 mp4 in the MSR-VTT layout; skipped when already generated);
2. cache frozen EfficientNet-Lite0 frame features and MiniLM token states (skipped when cached);
3. fit + test CLIP4Clip ``meanP`` and ``seqTransf`` through the real CLI (``main.py fit``);
4. re-run ``main.py test --ckpt_path`` on the seqTransf checkpoint and check it reproduces the metrics;
5. recompute every run's metrics from its ``sim_t2v.npy`` + ``text_to_video.json``;
6. write the comparison report of these runs (``experiments.report``) to ``runs/demo/report/`` and
   ``runs/demo/summary.md`` (key table, the checks of steps 4-5, a pointer to the report).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

QUICKSTART = "configs/quickstart.yaml"  # the shipped one (vtr.resources), from any directory


def loggers(save_dir: Path, name: str) -> str:
    return json.dumps([
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(save_dir), "name": name}},
        {"class_path": "lightning.pytorch.loggers.WandbLogger",
         "init_args": {"project": "vtr-demo", "name": name, "save_dir": str(save_dir), "offline": True,
                       "log_model": False}},
    ])


def recompute_check(test_dir: Path) -> float:
    """Largest absolute difference between metrics.json and metrics recomputed from the artifacts."""
    import numpy as np

    from lightning_modules.metrics import retrieval_metrics

    record = json.loads((test_dir / "metrics.json").read_text())
    gt = json.loads((test_dir / "text_to_video.json").read_text())
    again = retrieval_metrics(np.load(test_dir / "sim_t2v.npy"), gt)
    return max(abs(record["metrics"][k] - v) for k, v in again.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--epochs", type=int, default=None, help="override max_epochs (default: quickstart.yaml)")
    parser.add_argument("--seed", type=int, default=0)
    args, extra = parser.parse_known_args()

    from vtr.lightning_cli import main as cli_main
    from vtr.resources import resolve

    # like the quickstart's data root (`data`) and its runs, relative to the current directory (`make demo`: the
    # checkout); an installed vtr then writes where it is run, never into its own installation
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    common = ["--config", str(Path(resolve(QUICKSTART)).resolve()), "--seed_everything", str(args.seed), *extra]
    if args.epochs is not None:
        common += ["--trainer.max_epochs", str(args.epochs)]
    rows = []
    runs = [("clip4clip_meanP", ["--model.init_args.sim_header", "meanP"]),
            ("clip4clip_seqTransf", ["--model.init_args.sim_header", "seqTransf"])]
    for name, overrides in runs:
        t0 = time.perf_counter()
        cli = cli_main(["fit", *common, *overrides, "--trainer.logger", loggers(out, name)])
        seconds = time.perf_counter() - t0
        run_dir = Path(cli.trainer.log_dir)
        record = json.loads((run_dir / "test" / "metrics.json").read_text())
        rows.append({"name": name, "run_dir": run_dir, "seconds": seconds, "record": record,
                     "ckpt": cli.trainer.checkpoint_callback.best_model_path,
                     "recompute_diff": recompute_check(run_dir / "test"), "overrides": overrides})

    last = rows[-1]
    retest = cli_main(["test", *common, *last["overrides"], "--trainer.logger", loggers(out, last["name"] + "_retest"),
                       "--ckpt_path", last["ckpt"]])
    retest_record = json.loads((Path(retest.trainer.log_dir) / "test" / "metrics.json").read_text())
    retest_diff = max(abs(retest_record["metrics"][k] - last["record"]["metrics"][k])
                      for k in ("t2v_R1", "t2v_R5", "t2v_R10", "v2t_R1", "rsum", "t2v_MnR"))
    total = time.perf_counter() - started
    summary = finish(out, rows, Path(retest.trainer.log_dir), retest_diff, args.seed, total)
    print(summary.read_text())
    print(f"wrote {summary} and the comparison report {out / 'report' / 'report.md'} (index.html next to it)")


def write_report(out: Path, run_dirs: list[Path]) -> Path:
    """The comparison report (experiments/report) of this demo's run folders, in ``<out>/report``; the re-test is
    recognised from its artifacts and listed under Checks rather than counted as a run."""
    from experiments.report import main as report

    return report([*(str(d) for d in run_dirs), "--out", str(out / "report"),
                   "--title", "vtr demo: CLIP4Clip on SynthVTR"])


def finish(out: Path, rows: list[dict], retest_dir: Path, retest_diff: float, seed: int, total: float) -> Path:
    """Write the comparison report, then ``<out>/summary.md``: the key table, the demo's two checks and a pointer
    to the report. Returns the summary's path."""
    report_dir = write_report(out, [r["run_dir"] for r in rows] + [retest_dir])
    data = rows[0]["record"]["data"]
    oracle = data.get("oracle", {})
    n_videos = rows[0]["record"]["num_videos"]
    last = rows[-1]
    lines = [
        "# vtr demo: CLIP4Clip on SynthVTR (pretrained two-tower backbone, frozen trunks)",
        "",
        f"Full comparison report: `{report_dir / 'report.md'}` (`index.html` next to it: figures inline, "
        "provenance columns, paired bootstrap, per-run checks, sample queries). Key numbers:",
        "",
        f"Test split: {rows[0]['record']['num_texts']} caption queries x {n_videos} videos "
        f"({data.get('protocol')}); chance R@1 = {100.0 / n_videos:.2f} %. Model selection: "
        f"{data.get('model_selection')}. Seed {seed}.",
        "",
        "| run | t2v R@1 | t2v R@5 | t2v R@10 | t2v MdR | t2v MnR | v2t R@1 | v2t R@5 | rsum | fit+test (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["record"]["metrics"]
        lines.append(f"| {r['name']} | {m['t2v_R1']:.1f} | {m['t2v_R5']:.1f} | {m['t2v_R10']:.1f} | "
                     f"{m['t2v_MdR']:.1f} | {m['t2v_MnR']:.1f} | {m['v2t_R1']:.1f} | {m['v2t_R5']:.1f} | "
                     f"{m['rsum']:.1f} | {r['seconds']:.0f} |")
    if oracle:
        lines.append(f"| caption-consistent oracle (ceiling) | {oracle.get('R@1', float('nan')):.1f} | "
                     f"{oracle.get('R@5', float('nan')):.1f} | {oracle.get('R@10', float('nan')):.1f} | | | | | | |")
    lines += [
        "",
        f"- every run's metrics.json recomputed from sim_t2v.npy + text_to_video.json: max |diff| = "
        f"{max(r['recompute_diff'] for r in rows):.2e}",
        f"- `main.py test --ckpt_path` on {last['name']} reproduces the end-of-fit test metrics: max |diff| = "
        f"{retest_diff:.2e} (`{retest_dir}`)",
        f"- feature cache: {data.get('feature_cache')}",
        f"- total wall time {total:.0f} s (includes data generation and feature caching on a first run)",
        "",
        "Run directories:",
        *[f"- {r['name']}: `{r['run_dir']}`" for r in rows],
    ]
    summary = out / "summary.md"
    summary.write_text("\n".join(lines) + "\n")
    return summary


if __name__ == "__main__":
    main()
