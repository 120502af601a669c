"""Chunked vs naive evaluation scoring: time and peak memory.

Scores a 1,000 x 1,000 evaluation (T=12 frames, L=32 words, D=512) with the query-dependent
word-frame similarity (``components.token_frame_similarity``, NarVid's fine matching without its
learnt weights) and with the sentence-level cosine of CLIP4Clip, either in one call ("naive": the
whole [texts, videos, words, frames] tensor at once) or through the base module's tiles.

Each variant runs in a fresh subprocess so its peak resident memory (VmHWM) is its own; on a GPU the
peak CUDA allocation is reported instead.

    python -m benchmarks.eval_scoring [--device cuda] [--texts 1000 --videos 1000] [--narvid]

``--narvid`` adds NarVid's scoring of its two views alone (no encoders, random features and word masks); its whole
evaluation, encoders and packed queries included, is ``python -m benchmarks.narvid_eval``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.process_memory import peak_rss_mib

ROOT = Path(__file__).resolve().parents[1]


def run_variant(variant: str, n_t: int, n_v: int, t: int, words: int, d: int, chunk: int, device: str,
                repeats: int) -> dict:
    import torch

    from lightning_modules.base import score_tiles
    from lightning_modules.components import cosine_matrix, token_frame_similarity

    torch.manual_seed(0)
    dev = torch.device(device)
    text = {"words": torch.randn(n_t, words, d, device=dev), "word_mask": torch.rand(n_t, words, device=dev) < 0.6,
            "sentence": torch.randn(n_t, d, device=dev)}
    text["word_mask"][:, 0] = True
    video = {"frames": torch.randn(n_v, t, d, device=dev), "frame_mask": torch.ones(n_v, t, dtype=torch.bool,
                                                                                    device=dev),
             "video": torch.randn(n_v, d, device=dev)}

    def fine(tf: dict, vf: dict) -> torch.Tensor:
        return token_frame_similarity(tf["words"], tf["word_mask"], vf["frames"], vf["frame_mask"])

    def coarse(tf: dict, vf: dict) -> torch.Tensor:
        return cosine_matrix(tf["sentence"], vf["video"])

    def narvid(tf: dict, vf: dict) -> dict:
        return narvid_model.similarity(tf, vf)

    narvid_model = None
    if variant.startswith("narvid"):
        from lightning_modules import NarVid, OpenCLIPBackbone

        # the scoring has no learnt weights: any backbone builds it; the tiny CLIP's text blocks have 8 heads, and
        # temporal_init clip_text (the default) copies them into the temporal transformers, so 8 heads here
        narvid_model = NarVid(backbone=OpenCLIPBackbone("vtr-tiny-clip", pretrained=None), temporal_layers=1,
                              temporal_heads=8, nucleus_p=0.4).eval()
        text.update({"words": text["words"], "word_weights": torch.softmax(torch.randn(n_t, words, device=dev)
                                                                           .masked_fill(~text["word_mask"], -1e9), -1)})
        video.update({"narration": torch.randn(n_v, t, d, device=dev), "mask": video["frame_mask"]})
    fn = {"fine": fine, "coarse": coarse, "narvid": narvid}[variant.split("_")[0]]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base_rss = peak_rss_mib()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            if variant.endswith("naive"):
                sim = fn(text, video).float().cpu()
            elif variant.endswith("perquery"):  # one query at a time against every video
                rows = [score_tiles(fn, {k: v[i:i + 1] for k, v in text.items()}, video, 1, n_v)
                        for i in range(n_t)]
                sim = {k: torch.cat([r[k] for r in rows]) for k in rows[0]} if isinstance(rows[0], dict) \
                    else torch.cat(rows)
            else:
                sim = score_tiles(fn, text, video, chunk, n_v)
            if isinstance(sim, dict):
                sim = sum(sim.values())
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result = {"variant": variant, "chunk": None if variant.endswith("naive") else chunk, "device": device,
              "seconds_best": min(times), "checksum": float(sim.double().sum())}
    if dev.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_rss_mib"] = peak_rss_mib()
        result["peak_rss_over_inputs_mib"] = peak_rss_mib() - base_rss
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chunks", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--narvid", action="store_true",
                        help="also score NarVid's two query-dependent views: per-query loop vs chunks")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (args.texts, args.videos, args.frames, args.words, args.dim)
    if args.variant:  # child process
        print(json.dumps(run_variant(args.variant, *shape, args.chunk or 0, args.device, args.repeats)))
        return
    parser_plan = [("coarse_naive", 0), ("coarse_chunked", 256), ("fine_naive", 0)]
    parser_plan += [("fine_chunked", c) for c in args.chunks]
    if args.narvid:
        parser_plan += [("narvid_perquery", 1)] + [("narvid_chunked", c) for c in args.chunks]
    plan = parser_plan
    rows = []
    for variant, chunk in plan:
        cmd = [sys.executable, "-m", "benchmarks.eval_scoring", "--variant", variant, "--chunk", str(chunk),
               "--device", args.device, "--texts", str(args.texts), "--videos", str(args.videos), "--frames",
               str(args.frames), "--words", str(args.words), "--dim", str(args.dim), "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)  # cwd: -m imports this checkout
        if out.returncode != 0:
            rows.append({"variant": variant, "chunk": chunk, "error": out.stderr.strip().splitlines()[-1]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    mem_key = "peak_cuda_mib" if args.device.startswith("cuda") else "peak_rss_mib"
    print(f"scoring {args.texts} texts x {args.videos} videos, T={args.frames} L={args.words} D={args.dim} "
          f"on {args.device}")
    print(f"| similarity | mode | text chunk | time (s) | peak memory (MiB, {mem_key}) |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | failed | {r['chunk']} | - | {r['error']} |")
            continue
        kind, mode = r["variant"].split("_")
        mode = "per-query loop" if mode == "perquery" else mode
        print(f"| {kind} | {mode} | {r['chunk'] or 'all'} | {r['seconds_best']:.3f} | {r[mem_key]:.0f} |")
    sums = {r["variant"] + str(r.get("chunk")): r["checksum"] for r in rows if "checksum" in r}
    print("checksums (naive and chunked must agree):", json.dumps(sums))
    failed = [r["variant"] for r in rows if "error" in r]
    if failed:  # a table with a failed row is not a figure: say so in the exit status too
        raise SystemExit(f"variants failed: {failed}")


if __name__ == "__main__":
    main()
