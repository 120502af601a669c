"""Train-step time of NarVid, ExCae and CLIP4Clip on the same backbone and batch.

Both methods run on the offline two-tower backbone with frozen trunks fed from cached trunk features
(the SynthVTR setting): per step the cost is the heads, the method's own modules and its loss.
Inputs are random tensors of the cached shapes (frames [B, T, 1280], query tokens [B, L, 384], for
NarVid one caption per frame [B, T, L, 384], for ExCae K captions per video [B, K, L, 384]), so the numbers
isolate the model from data loading; token masks are prefixes of ~``--query-tokens`` tokens of the ``L`` slots, as
real captions pad (not real captions). ExCae runs with its experts computed only for the samples routed to them
(``routed``, the default) and with every expert on every sample (``all``, as the released code). Each row also gives
its step time over CLIP4Clip seqTransf's (NarVid's two temporal transformers are seqTransf's one, twice).

    python -m benchmarks.train_step [--batch 64 --frames 8 --words 32 --captions 10 --steps 15 --device cpu]
        [--only "ExCae"] [--json results/benchmarks/train_step.json] [--machine-state auto|idle|shared]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from benchmarks.machine import MACHINE_STATES, load_average, machine_record
from benchmarks.narvid_eval import query_lengths
from datamodules.atomic import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]  # the checkout: results/benchmarks/ by default

BASELINE = "CLIP4Clip seqTransf"

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--captions", type=int, default=10, help="ExCae's K captions per video")
    parser.add_argument("--only", default=None, help="run the methods whose name contains this text")
    parser.add_argument("--query-tokens", type=float, default=10.0, help="mean real tokens per text, SOT/EOT included")
    parser.add_argument("--json", type=Path, default=ROOT / "results" / "benchmarks" / "train_step.json",
                        help="where the record goes (default: the file the README table is generated from)")
    parser.add_argument("--machine-state", default="auto", choices=MACHINE_STATES,
                        help="idle or shared (other jobs running); auto: idle when the load average is below 0.5")
    parser.add_argument("--note", default=None, help="how the machine was used meanwhile (written into the JSON)")
    args = parser.parse_args()

    from datamodules.batch import MultiCaptions, NarrationCaptions, PairBatch, TextBatch, VideoBatch
    from lightning_modules import CLIP4Clip, ExCae, NarVid, PretrainedTwoTower

    dev = torch.device(args.device)
    b, t, words = args.batch, args.frames, args.words
    g = torch.Generator().manual_seed(0)
    slots = torch.arange(words)
    mask = slots < query_lengths(b, args.query_tokens, words, g)[:, None]
    narr_mask = slots < query_lengths(b * t, args.query_tokens, words, g).view(b, t, 1)
    text = TextBatch(index=torch.arange(b), video_index=torch.arange(b), texts=[""] * b,
                     cached_tokens=torch.randn(b, words, 384, generator=g), cached_mask=mask)
    video = VideoBatch(index=torch.arange(b), mask=torch.ones(b, t, dtype=torch.bool), video_ids=[""] * b,
                       cached_frames=torch.randn(b, t, 1280, generator=g),
                       aux={"narration": NarrationCaptions([[""] * t for _ in range(b)],
                                                           tokens=torch.randn(b, t, words, 384, generator=g),
                                                           mask=narr_mask),
                            "multi": MultiCaptions([[""] * args.captions for _ in range(b)],
                                                   tokens=torch.randn(b, args.captions, words, 384, generator=g),
                                                   mask=narr_mask[:, :1].expand(b, args.captions, words).clone())})
    batch = PairBatch(text=text, video=video).to(dev)

    def backbone() -> PretrainedTwoTower:
        return PretrainedTwoTower(embed_dim=256, max_words=words, image_size=112)

    def method(cls: type, **kwargs: object) -> torch.nn.Module:
        # the SynthVTR configs' settings: no pretrained CLIP scale on this backbone, 1/0.07 learnt with the heads
        return cls(backbone=backbone(), logit_scale_init=14.29, logit_scale_group="head", **kwargs)

    # the temporal transformers and ExCae's experts as the SynthVTR configs set them
    temporal = dict(temporal_layers=2, temporal_heads=4, temporal_init="random")
    excae = dict(expert_heads=4, expert_ffn=512)
    builders = {
        "CLIP4Clip meanP": lambda: method(CLIP4Clip, sim_header="meanP"),
        "CLIP4Clip seqTransf": lambda: method(CLIP4Clip, sim_header="seqTransf", **temporal),
        "NarVid (full)": lambda: method(NarVid, **temporal),
        "NarVid without CMI": lambda: method(NarVid, use_co_attention=False, **temporal),
        "ExCae (ECS, routed experts)": lambda: method(ExCae, **excae),
        "ExCae (ECS, all experts)": lambda: method(ExCae, expert_compute="all", **excae),
        "ExCae without ECS (token mean)": lambda: method(ExCae, use_ecs=False, **excae),
    }
    models = {name: build() for name, build in builders.items() if args.only is None or args.only in name}
    load_before = load_average()  # other jobs on the machine inflate every time below
    print(f"train step, batch {b}, {t} frames, {words} words, cached two-tower features, {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print("| method | trainable params | ms / step (median) | ms / step (min) | CPU ms / step (median) |")
    print("|---|---|---|---|---|")
    rows = []
    for name, model in models.items():
        model.to(dev).train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        times, cpu = [], []
        for step in range(args.steps + 3):
            start, start_cpu = time.perf_counter(), time.process_time()
            loss, _ = model.training_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if step >= 3:  # warm-up steps excluded
                times.append((time.perf_counter() - start) * 1000)
                cpu.append((time.process_time() - start_cpu) * 1000)
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"| {name} | {params / 1e6:.2f} M | {statistics.median(times):.1f} | {min(times):.1f} | "
              f"{statistics.median(cpu):.1f} |", flush=True)
        # CPU time (all threads of this process) next to wall time: on a machine shared with other jobs the wall
        # time also counts the waiting, the CPU time much less so
        rows.append({"method": name, "trainable_params_m": round(params / 1e6, 2),
                     "ms_median": round(statistics.median(times), 2),
                     "ms_min": round(min(times), 2), "cpu_ms_median": round(statistics.median(cpu), 2)})
    baseline = next((r["ms_median"] for r in rows if r["method"] == BASELINE), None)
    for r in rows:
        r["x_seqtransf"] = round(r["ms_median"] / baseline, 2) if baseline else "-"
    if baseline:
        print("median step over CLIP4Clip seqTransf's: " + ", ".join(f"{r['method']} {r['x_seqtransf']}x"
                                                                    for r in rows), flush=True)
    write_json_atomic(args.json, {
        "benchmark": "benchmarks/train_step.py", "batch": b, "frames": t, "words": words,
        "query_tokens_mean": args.query_tokens, "captions": args.captions, "steps": args.steps,
        **machine_record(args.machine_state, load_before, args.device),
        **({"note": args.note} if args.note else {}), "rows": rows})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
