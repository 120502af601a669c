"""Generate SynthVTR, the embedded text-video retrieval benchmark, from the command line.

    python -m datamodules.synthvtr --out /tmp/synth --num-families 20 --test-families 5
    python -m datamodules.synthvtr --specs-only --detail 3      # captions and oracle only, no files

Every ``SynthVTRConfig`` field is a flag (``--num-families``, ``--detail``, ``--mutations colour,shape``,
...). The summary (counts, oracle, timings) is this command's output, printed to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from datamodules.synthvtr.config import GENERATOR_VERSION, SynthVTRConfig
from datamodules.synthvtr.oracle import build_synthvtr
from datamodules.synthvtr.store import generate_synthvtr, is_complete, verify_content


def _str2bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(SynthVTRConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(SynthVTRConfig(), f.name)
        if isinstance(default, tuple):
            conv: Callable[[str], Any] = float if f.name == "event_window" else str
            parser.add_argument(flag, default=default,
                                help=f"comma separated (default: {','.join(map(str, default))})",
                                type=lambda v, c=conv: tuple(c(x.strip()) for x in v.split(",") if x.strip()))
        elif isinstance(default, bool):
            parser.add_argument(flag, type=_str2bool, default=default, help=f"true or false ({default})")
        else:
            parser.add_argument(flag, type=type(default), default=default, help=f"(default: {default})")


def _summary(config: SynthVTRConfig, counts: dict[str, int], oracle: dict[str, Any]) -> str:
    lines = [
        f"SynthVTR {GENERATOR_VERSION} fingerprint {config.fingerprint()}: {counts['videos']} videos "
        f"({counts['train_videos']} train / {counts['test_videos']} test; {config.num_families} families of "
        f"{config.family_size}), {counts['captions']} captions, detail {config.detail}",
    ]
    if oracle:
        fc = oracle["first_caption"]
        lines.append(f"oracle (all test captions): R@1 {oracle['R@1']:.1f}  R@5 {oracle['R@5']:.1f}  "
                     f"R@10 {oracle['R@10']:.1f}  mean consistent {oracle['mean_consistent']:.2f}  "
                     f"unique {oracle['unique_pct']:.1f}%  chance R@1 {oracle['chance_R@1']:.2f}")
        lines.append(f"oracle (first caption / JSFusion csv): R@1 {fc['R@1']:.1f}  R@5 {fc['R@5']:.1f}  "
                     f"R@10 {fc['R@10']:.1f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m datamodules.synthvtr",
                                     description=(__doc__ or "SynthVTR").splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="output root (MSR-VTT layout); required unless --specs-only")
    parser.add_argument("--workers", type=int, default=None, help="render processes (default min(2, cpus))")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    parser.add_argument("--specs-only", action="store_true",
                        help="build specs, captions and the oracle in memory only (no files)")
    parser.add_argument("--force", action="store_true", help="regenerate even if --out is complete")
    _add_config_arguments(parser)
    args = parser.parse_args(argv)
    config = SynthVTRConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(SynthVTRConfig)})
    t0 = time.perf_counter()
    if args.specs_only:
        data = build_synthvtr(config)
        counts = {"videos": len(data.specs), "train_videos": len(data.ids("train")),
                  "test_videos": len(data.ids("test")), "captions": len(data.captions)}
        print(_summary(config, counts, data.oracle()))
        print(f"specs, captions and oracle in {time.perf_counter() - t0:.2f} s (no files written)")
        return 0
    if args.out is None:
        parser.error("--out is required unless --specs-only")
    if args.force:
        (args.out / "synthvtr" / "generation.json").unlink(missing_ok=True)
    was_complete = is_complete(args.out, config)
    generate_synthvtr(args.out, config, workers=args.workers, progress=not args.no_progress)
    info = json.loads((args.out / "synthvtr" / "generation.json").read_text(encoding="utf-8"))
    print(_summary(config, info["counts"], info["oracle"]))
    tm = info["timings"]
    print(f"content {info['content_sha256'][:12]} (sha256 of {args.out / info['manifest']}, which lists every file's "
          f"sha256); {info['encoder']['x264']}, PyAV {info['encoder']['pyav']}")
    if was_complete:
        check = verify_content(args.out)  # a mismatch is logged (one warning with the counts)
        print(f"{args.out} already complete (fingerprint {config.fingerprint()}; "
              + ("every file matches the manifest" if check.ok else "files differ from the manifest: see the warning")
              + f"); nothing to do ({time.perf_counter() - t0:.2f} s)")
    else:
        print(f"wrote {args.out} in {tm['total_s']:.1f} s: render {tm['render_wall_s']:.1f} s wall with "
              f"{tm['workers']} workers; {tm['cpu_ms_per_video']:.1f} CPU ms/video "
              f"({tm['cpu_ms_per_video_render']:.1f} render + {tm['cpu_ms_per_video_encode']:.1f} x264)")
    return 0

