"""Train-step time of NarVid, ExCae and CLIP4Clip on the same backbone and batch.

Both methods run on the offline two-tower backbone with frozen trunks fed from cached trunk features
(the SynthVTR setting): per step the cost is the heads, the method's own modules and its loss.
Inputs are random tensors of the cached shapes (frames [B, T, 1280], query tokens [B, L, 384], for
NarVid one caption per frame [B, T, L, 384], for ExCae K captions per video [B, K, L, 384]), so the numbers
isolate the model from data loading. ExCae runs with its experts computed only for the samples routed to them
(``routed``, the default) and with every expert on every sample (``all``, as the released code).

    python -m benchmarks.train_step [--batch 64 --frames 8 --words 32 --captions 10 --steps 20 --device cpu]
        [--only "ExCae"] [--json results/benchmarks/train_step.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--captions", type=int, default=10, help="ExCae's K captions per video")
    parser.add_argument("--only", default=None, help="run the methods whose name contains this text")
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    parser.add_argument("--note", default=None, help="how the machine was used meanwhile (written into the JSON)")
    args = parser.parse_args()

    from datamodules.batch import MultiCaptions, NarrationCaptions, PairBatch, TextBatch, VideoBatch
    from lightning_modules import CLIP4Clip, ExCae, NarVid, PretrainedTwoTower

    dev = torch.device(args.device)
    b, t, words = args.batch, args.frames, args.words
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(b, words, generator=g) < 0.5
    mask[:, :2] = True
    narr_mask = torch.rand(b, t, words, generator=g) < 0.5
    narr_mask[..., :2] = True
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
    load_before = round(os.getloadavg()[0], 2)  # other jobs on the machine inflate every time below
    print(f"train step, batch {b}, {t} frames, {words} words, cached two-tower features, {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print("| method | trainable params | ms / step (median) | ms / step (min) |")
    print("|---|---|---|---|")
    rows = []
    for name, model in models.items():
        model.to(dev).train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        times = []
        for step in range(args.steps + 3):
            start = time.perf_counter()
            loss, _ = model.training_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if step >= 3:  # warm-up steps excluded
                times.append((time.perf_counter() - start) * 1000)
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"| {name} | {params / 1e6:.2f} M | {statistics.median(times):.1f} | {min(times):.1f} |", flush=True)
        rows.append({"method": name, "trainable_params_m": round(params / 1e6, 2),
                     "ms_median": round(statistics.median(times), 2),
                     "ms_min": round(min(times), 2)})
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "benchmark": "benchmarks/train_step.py", "batch": b, "frames": t, "words": words, "captions": args.captions,
            "steps": args.steps, "device": args.device, "torch_threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_average_1min_before": load_before,
            **({"note": args.note} if args.note else {}), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
