"""experiments.tiny_inputs: the generated inputs every pipeline test runs on are what they claim: decodable clips of
the asked size, a fake MSR-VTT whose files agree with each other, a tokenizer with its special tokens, a loadable LM."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np

from experiments.tiny_inputs import (
    COLOURS,
    TINY_SYNTH,
    bpe_tokenizer,
    make_fake_msrvtt,
    save_tiny_llama,
    synth_args,
    write_video,
)


def test_a_clip_has_the_asked_frames_and_size_and_shows_its_colour(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "clip.mp4"
    write_video(path, COLOURS["red"], num_frames=6, size=48)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (48, 48, 3)
    square = frames[0][11:19, 1:9].reshape(-1, 3).mean(0)  # the square starts at the left edge
    assert square[0] > 150 and square[1] < 90 and square[2] < 90  # red after H.264 (lossy, so roughly)


def test_the_fake_msrvtt_files_agree_with_each_other(tmp_path: Path) -> None:
    root = make_fake_msrvtt(tmp_path / "msrvtt", num_train=3, num_test=2, captions_per_video=2)
    data = json.loads((root / "MSRVTT_data.json").read_text())
    assert [v["split"] for v in data["videos"]] == ["train"] * 3 + ["test"] * 2
    assert len(data["sentences"]) == 10 and len({s["sen_id"] for s in data["sentences"]}) == 10
    with (root / "MSRVTT_train.9k.csv").open() as fh:
        assert [row["video_id"] for row in csv.DictReader(fh)] == ["video0", "video1", "video2"]
    with (root / "MSRVTT_JSFUSION_test.csv").open() as fh:
        test = list(csv.DictReader(fh))
    assert [row["video_id"] for row in test] == ["video3", "video4"] and test[0]["sentence"].endswith("moves right")
    assert sorted(p.name for p in (root / "videos" / "all").iterdir()) == [f"video{i}.mp4" for i in range(5)]


def test_synth_args_point_a_config_at_the_tiny_benchmark_and_take_overrides(tmp_path: Path) -> None:
    args = synth_args(tmp_path, num_workers=2)
    assert f"--data.init_args.root={tmp_path}" in args and "--data.init_args.num_workers=2" in args
    assert len(args) == len(TINY_SYNTH) + 1  # every tiny setting once, plus the root


def test_the_tokenizer_keeps_its_special_tokens_and_the_llama_loads_back(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = bpe_tokenizer(["<image>"])
    assert tokenizer.convert_tokens_to_ids("<image>") != tokenizer.unk_token_id
    assert tokenizer.decode(tokenizer("a red circle")["input_ids"]) == "a red circle"
    path = save_tiny_llama(tmp_path / "llama")
    model = AutoModelForCausalLM.from_pretrained(path)
    loaded = AutoTokenizer.from_pretrained(path)
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == len(loaded)
    logits = model(**loaded("a red circle", return_tensors="pt")).logits
    assert logits.shape[-1] == len(loaded) and bool(np.isfinite(logits.detach().numpy()).all())
