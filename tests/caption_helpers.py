"""Shared pieces of the captioning tests: a tiny SynthVTR, tiny random transformers models, store readers and a
loopback OpenAI-compatible server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

# the tiny SynthVTR and the tiny random Llama live in experiments/tiny_inputs.py (re-exported here for the tests)
from experiments.tiny_inputs import TINY_SYNTH, bpe_tokenizer, save_tiny_llama, synth_args, tiny_synth  # noqa: F401
from tests.run_helpers import REPO, serve_on_loopback

CONFIGS = REPO / "configs" / "captioners"


def writer_output(config: Path) -> str:
    """The store a captioner config writes: its ``CaptionWriter`` output (relative to the dataset root)."""
    import yaml

    callbacks = yaml.safe_load(config.read_text())["trainer"]["callbacks"]
    (writer,) = [cb for cb in callbacks if cb["class_path"].endswith("CaptionWriter")]
    return writer["init_args"]["output"]


def read_store(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


LLAVA_CHAT = ("{% for message in messages %}{% if message['role'] == 'user' %}USER: {% for c in message['content'] %}"
              "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% else %}"
              "ASSISTANT: {% for c in message['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
              "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def save_tiny_llava(path: Path) -> Path:
    """A randomly initialised LLaVA (2-layer CLIP vision tower + 2-layer Llama, BPE trained here) on disk."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = bpe_tokenizer(["<image>"])
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=16,
                               vision_feature_select_strategy="default", chat_template=LLAVA_CHAT,
                               num_additional_image_tokens=1)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=16, projection_dim=32)
    text = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2,
                       pad_token_id=3, max_position_embeddings=256)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def save_tiny_qwen2(path: Path) -> Path:
    """A randomly initialised 2-layer Qwen2 causal LM with the tests' tokenizer, on disk: the tiny twin, of the same
    class (``Qwen2ForCausalLM``), of the Qwen2.5 LM the real CaRe-DPO captioner configs name."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = bpe_tokenizer([])
    config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2,
                         pad_token_id=3, max_position_embeddings=256)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class FakeOpenAIAPI(BaseHTTPRequestHandler):
    """Loopback OpenAI-compatible chat completions: every answer is a numbered list of 10 captions.

    The first ``fail_first`` requests get a 429 (the retry path); ``requests`` records what came in. Subclass it
    per server (with its own ``requests`` list) so that two servers never share that state.
    """

    requests: ClassVar[list[dict[str, Any]]] = []
    fail_first = 0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(429)
            self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(b'{"error": "slow down"}')
            return
        answer = "Here are 10 captions:\n" + "\n".join(f"{k + 1}. caption {k} of the video" for k in range(10))
        payload = {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serve_fake_api(handler: type[FakeOpenAIAPI]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port; yields the ``base_url`` (``http://127.0.0.1:<port>/v1``)."""
    with serve_on_loopback(handler) as url:
        yield url + "v1"


def save_module_checkpoint(cls: type, init_args: dict[str, Any], path: Path, seed: int = 0) -> Path:
    """A checkpoint of ``cls`` built from LightningCLI ``init_args`` (nested ``class_path`` specs) as ``main.py`` builds
    it, so that ``cls.load_from_checkpoint(path)`` rebuilds it the same way: a trained run's checkpoint without the
    training (its weights are the seeded initial ones)."""
    import lightning as L
    import torch
    import yaml
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "module", fail_untyped=False)
    config = parser.parse_object({"module": init_args})
    hparams = yaml.safe_load(parser.dump(config, skip_none=False))["module"]  # every argument, defaults included
    torch.manual_seed(seed)
    module = parser.instantiate_classes(config).module
    # the hyper-parameters LightningCLI records: the config (nested class_path specs) and the instantiator that
    # load_from_checkpoint rebuilds it with
    hparams["_instantiator"] = "lightning.pytorch.cli.instantiate_module"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": L.__version__}, path)
    return path
