"""Tiny generated inputs for running whole pipelines on a CPU without the hub: a fake MSR-VTT in the public layout,
the tiny SynthVTR, and a tiny random Llama with a BPE tokenizer trained here.

The tests use them (``tests/conftest.py``, ``tests/caption_helpers.py`` re-export them) and so do the commands that
run the real CLI on generated data (``python -m experiments.leakage_protocols``), which must not import the tests.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230), "yellow": (240, 220, 40),
           "white": (245, 245, 245), "purple": (150, 50, 200)}

# 4 families of 2 videos, 16 frames of 32 px: 8 videos, rendered in a couple of seconds
TINY_SYNTH = {"video_dir": "videos", "num_families": 4, "family_size": 2, "test_families": 1, "val_families": 1,
              "video_size": 32, "video_frames": 16, "num_frames": 4, "image_size": 32, "num_workers": 0,
              "predict_split": "all",
              "predict_batch_size": 3}


def write_video(path: Path, colour: tuple[int, int, int], num_frames: int = 16, size: int = 32, seed: int = 0,
                ) -> None:
    """A tiny H.264 clip: a coloured square moving over noise (decodable by decord and PyAV)."""
    import av

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for i in range(num_frames):
            frame = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            x = int(i * (size - 10) / max(1, num_frames - 1))
            frame[10:20, x:x + 10] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_fake_msrvtt(root: Path, num_train: int = 12, num_test: int = 6, captions_per_video: int = 3) -> Path:
    """MSR-VTT layout: MSRVTT_data.json, MSRVTT_train.9k.csv, MSRVTT_JSFUSION_test.csv, videos/all/*.mp4."""
    names = list(COLOURS)
    videos, sentences = [], []
    ids = [f"video{i}" for i in range(num_train + num_test)]
    for i, vid in enumerate(ids):
        colour = names[i % len(names)]
        write_video(root / "videos" / "all" / f"{vid}.mp4", COLOURS[colour], seed=i)
        videos.append({"video_id": vid, "url": f"https://www.youtube.com/watch?v=parent{i // 2}",
                       "category": 0, "split": "train" if i < num_train else "test", "id": i})
        for k in range(captions_per_video):
            sentences.append({"caption": f"a {colour} square moves right take {k} clip {i}", "video_id": vid,
                              "sen_id": len(sentences)})
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    with (root / "MSRVTT_train.9k.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id"])
        w.writerows([[v] for v in ids[:num_train]])
    with (root / "MSRVTT_JSFUSION_test.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for j, vid in enumerate(ids[num_train:]):
            colour = names[(num_train + j) % len(names)]
            w.writerow([f"ret{j}", f"msr{j}", vid, f"a {colour} square moves right"])
    return root


def synth_args(parent: Path, **overrides: Any) -> list[str]:
    """``--data.init_args.*`` overrides that point a SynthVTR captioner config at the tiny benchmark."""
    values = {**TINY_SYNTH, "root": str(parent), **overrides}
    return [f"--data.init_args.{k}={v}" for k, v in values.items()]


def tiny_synth(parent: Path) -> Path:
    """Generate the tiny SynthVTR under ``parent``; returns the dataset folder."""
    from datamodules import SynthVTR

    dm = SynthVTR(root=str(parent), **{k: v for k, v in TINY_SYNTH.items()})
    dm.generator_workers = 1
    dm.prepare_data()
    return dm.root


def bpe_tokenizer(extra: list[str]) -> Any:
    """A byte-level BPE tokenizer (vocabulary 300) trained here on two sentences, with ``extra`` special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<pad>", *extra],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["a red circle moves left on the grass", "USER: ASSISTANT: describe this image"] * 10,
                            trainer)
    kwargs: dict[str, Any] = {"extra_special_tokens": {"image_token": "<image>"}} if "<image>" in extra else {}
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", **kwargs)


def save_tiny_llama(path: Path) -> Path:
    """A randomly initialised 2-layer Llama causal LM with a chat template, on disk."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = bpe_tokenizer([])
    tokenizer.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                               "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2,
                         pad_token_id=3, max_position_embeddings=256)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
