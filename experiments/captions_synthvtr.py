"""Generate narration, multi and supplement captions for every SynthVTR video with the simulated captioner.

    python -m experiments.captions_synthvtr                      # the default SynthVTR (configs/data/synthvtr.yaml)
    python -m experiments.captions_synthvtr --root /tmp/synth --num-families 20 --test-families 5 --val-families 2

Runs ``main.py predict`` with ``configs/captioners/synthvtr_<name>.yaml`` for narration, multi and the supplement
prompts A, B and C (the benchmark is generated first if missing), then prints what each caption store holds: videos,
captions per video, the configured hallucination rate and detail, the hallucinated slots per caption, an example.
Extra ``--`` arguments go to every ``main.py predict`` call (e.g. ``-- --model.init_args.backend.init_args.detail=3``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from vtr.lightning_cli import main as cli_main
from vtr.resources import configs_dir

CONFIGS = configs_dir() / "captioners"
# the supplement prompts A/B/C of conical embedding optimisation are three configs of one kind
KINDS = ("narration", "multi", "supplement_a", "supplement_b", "supplement_c")


def summarize(path: Path) -> dict[str, Any]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    captions = [c for r in records for c in r["captions"]]
    slots = [h for r in records for h in r.get("hallucinated", [])]
    total = sum(n for r in records for n in r.get("slots", []))
    first = records[0] if records else {}
    return {"file": str(path), "videos": len(records), "unique_videos": len({r["video_id"] for r in records}),
            "captions": len(captions), "captions_per_video": round(len(captions) / max(1, len(records)), 2),
            "hallucination_rate": first.get("hallucination_rate"), "detail": first.get("detail"),
            "captions_with_a_hallucination_pct": round(100 * sum(h > 0 for h in slots) / max(1, len(slots)), 1),
            "hallucinated_slots_per_caption": round(sum(slots) / max(1, len(slots)), 3),
            "measured_slot_hallucination_rate": round(sum(slots) / max(1, total), 3),
            "example": {"video_id": first.get("video_id"), "caption": (first.get("captions") or [""])[0]}}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m experiments.captions_synthvtr", description=__doc__)
    parser.add_argument("--root", default=None, help="SynthVTR parent folder (default: the config's `data`)")
    parser.add_argument("--num-families", type=int, default=None)
    parser.add_argument("--test-families", type=int, default=None)
    parser.add_argument("--val-families", type=int, default=None)
    parser.add_argument("--runs", default="runs/captions", help="where the predict runs keep their config.yaml")
    args = parser.parse_args(argv)
    data = {"root": args.root, "num_families": args.num_families, "test_families": args.test_families,
            "val_families": args.val_families}
    overrides = [f"--data.init_args.{k}={v}" for k, v in data.items() if v is not None]
    report = {}
    for kind in KINDS:
        t0 = time.perf_counter()
        cli = cli_main(["predict", "--config", str(CONFIGS / f"synthvtr_{kind}.yaml"), *overrides,
                        f"--trainer.default_root_dir={Path(args.runs) / f'synthvtr_{kind}'}", *passthrough])
        writer = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "CaptionWriter")
        report[kind] = {**summarize(writer.output), "wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
