"""Conical embedding optimisation's leak-free ``per_candidate`` scoring: time and peak memory, chunked vs naive.

``per_candidate`` scores (query i, video j) with the query fused with video j's supplement, so every pair has its own
text embedding. For ``sum`` and ``gate`` fusion that is arithmetic on precomputed embeddings:

* ``naive``: the whole ``[texts, videos, D]`` tensor of fused embeddings at once;
* ``chunked``: the module's own path (``ConicalEmbedding.per_candidate_similarity``) over the base module's
  (text chunk x video chunk) tiles; ``sum`` in closed form (no 3-D tensor at all), ``gate`` one query at a time.

For ``concat`` every pair is a string through the text encoder (texts x videos encoder passes); the benchmark times
``--concat-pairs`` of them in batches of ``per_candidate_batch`` (chunked) and one at a time (naive), and extrapolates
to texts x videos. Each variant runs in a fresh subprocess, so its peak resident memory (VmHWM) is its own.

    python -m benchmarks.per_candidate [--texts 1000 --videos 1000 --dim 512] \
        [--json results/benchmarks/per_candidate.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.process_memory import peak_rss_mib

ROOT = Path(__file__).resolve().parents[1]


def model_for(fusion: str, text_backbone: str):  # noqa: ANN201 - a ConicalEmbedding, imported lazily
    import torch

    from lightning_modules import ConicalEmbedding, OpenCLIPBackbone, PretrainedTwoTower

    torch.manual_seed(0)
    if text_backbone == "two-tower":  # the offline MiniLM text trunk (frozen) of the SynthVTR configs
        backbone = PretrainedTwoTower(embed_dim=256, max_words=32)
    else:  # an open_clip architecture with random weights: CLIP's cost without a download
        backbone = OpenCLIPBackbone(text_backbone, pretrained=None, max_words=70)
    model = ConicalEmbedding(backbone=backbone, text_fusion=fusion, logit_scale_init=14.29).eval()
    if fusion == "gate":
        torch.nn.init.normal_(model.gate.proj.weight, std=0.05)
    return model


def run_variant(variant: str, n_t: int, n_v: int, d: int, chunk: int, concat_pairs: int, text_backbone: str,
                batch: int) -> dict:
    import torch
    import torch.nn.functional as F

    from lightning_modules.base import score_tiles

    torch.set_grad_enabled(False)
    fusion, mode = variant.split("_")
    result: dict = {"variant": variant, "fusion": fusion, "mode": mode}
    if fusion == "concat":
        model = model_for("concat", text_backbone)
        queries = [f"query {i}: a person is slicing a red tomato in a small kitchen" for i in range(concat_pairs)]
        pairs = [f"{q} supplement: the kitchen has white tiles and a window on the left" for q in queries]
        base_rss = peak_rss_mib()
        start = time.perf_counter()
        step = batch if mode == "chunked" else 1
        for k in range(0, len(pairs), step):
            model.encode_strings(pairs[k:k + step], memo=False)
        seconds = time.perf_counter() - start
        per_pair = seconds / len(pairs)
        result.update({"pairs_timed": len(pairs), "batch": step, "seconds_timed": round(seconds, 3),
                       "pairs_per_second": round(1 / per_pair, 1),
                       "seconds": round(per_pair * n_t * n_v, 1), "extrapolated": True,
                       "peak_rss_mib": round(peak_rss_mib(), 1),
                       "peak_rss_over_model_mib": round(peak_rss_mib() - base_rss, 1), "text_backbone": text_backbone,
                       "detail": f"{text_backbone} text tower, batch {step}: {1 / per_pair:.1f} pairs/s over "
                                 f"{len(pairs)} pairs, extrapolated to {n_t} x {n_v}"})
        return result
    model = model_for(fusion, text_backbone)
    g = torch.Generator().manual_seed(0)
    text = {"query": torch.randn(n_t, d, generator=g)}
    video = {"video": F.normalize(torch.randn(n_v, d, generator=g), dim=-1),
             "supplement": torch.randn(n_v, d, generator=g)}
    if fusion == "gate":  # the gate of a model of this width
        model.gate = type(model.gate)(d)
        torch.nn.init.normal_(model.gate.proj.weight, std=0.05)
    base_rss = peak_rss_mib()
    start = time.perf_counter()
    if mode == "naive":
        q, s = text["query"][:, None, :], video["supplement"][None, :, :]
        fused = q + s if fusion == "sum" else model.gate(q.expand(-1, n_v, -1), s.expand(n_t, -1, -1))
        sim = (F.normalize(fused, dim=-1) * video["video"][None]).sum(-1)
    else:
        sim = score_tiles(model.per_candidate_similarity, text, video, chunk, 1024)
    seconds = time.perf_counter() - start
    checksum = round(float(sim.double().sum()), 4)
    how = ("the whole [texts, videos, D] tensor at once" if mode == "naive" else
           f"the module's tiles ({chunk} texts x 1024 videos)")
    result.update({"text_chunk": None if mode == "naive" else chunk, "seconds": round(seconds, 3),
                   "peak_rss_mib": round(peak_rss_mib(), 1),
                   "peak_rss_over_inputs_mib": round(peak_rss_mib() - base_rss, 1),
                   "checksum": checksum, "extrapolated": False, "detail": f"{how}; checksum {checksum}"})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=256, help="texts per tile (videos per tile: 1024)")
    parser.add_argument("--concat-pairs", type=int, default=1024, help="fused strings timed for concat")
    parser.add_argument("--text-backbone", default="ViT-B-32",
                        help="open_clip architecture (random weights) or 'two-tower' (offline MiniLM)")
    parser.add_argument("--batch", type=int, default=256, help="fused strings per encoder call (chunked concat)")
    parser.add_argument("--skip", nargs="*", default=[], help="variants to leave out, e.g. concat_naive")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--note", default=None, help="how the machine was used meanwhile (written into the JSON)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (args.texts, args.videos, args.dim, args.chunk, args.concat_pairs, args.text_backbone, args.batch)
    if args.variant:  # child process
        print(json.dumps(run_variant(args.variant, *shape)))
        return
    plan = [v for v in ("sum_naive", "sum_chunked", "gate_naive", "gate_chunked", "concat_naive", "concat_chunked")
            if v not in args.skip]
    rows = []
    load_before = os.getloadavg()[0]
    for variant in plan:
        cmd = [sys.executable, "-m", "benchmarks.per_candidate", "--variant", variant, "--texts", str(args.texts),
               "--videos", str(args.videos), "--dim", str(args.dim), "--chunk", str(args.chunk), "--concat-pairs",
               str(args.concat_pairs), "--text-backbone", args.text_backbone, "--batch", str(args.batch)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)  # cwd: -m imports this checkout
        if out.returncode != 0:
            rows.append({"variant": variant, "error": (out.stderr.strip().splitlines() or ["?"])[-1]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"per_candidate scoring, {args.texts} texts x {args.videos} videos, D={args.dim}, CPU "
          f"({os.cpu_count()} cores), concat text encoder {args.text_backbone}")
    print("| fusion | mode | time (s) | peak memory (MiB, VmHWM) | note |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | failed | - | - | {r['error']} |")
        else:
            print(f"| {r['fusion']} | {r['mode']} | {r['seconds']}{' (extrapolated)' if r['extrapolated'] else ''} | "
                  f"{r['peak_rss_mib']:.0f} | {r['detail']} |")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"benchmark": "per_candidate", "texts": args.texts, "videos": args.videos, "dim": args.dim,
                  "text_chunk": args.chunk, "video_chunk": 1024, "concat_text_backbone": args.text_backbone,
                  "concat_batch": args.batch, "device": "cpu", "cpu_count": os.cpu_count(),
                  "machine": platform.machine(), "load_average_1min_before": round(load_before, 2),
                  "note": args.note, "rows": rows}
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
