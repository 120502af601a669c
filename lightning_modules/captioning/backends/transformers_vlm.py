"""Captions from any transformers image-text-to-text model (LLaVA-1.5 for NarVid's narration, others alike).

``from_pretrained(path_or_name)`` loads the processor and ``AutoModelForImageTextToText`` (a hub name such
as ``llava-hf/llava-1.5-7b-hf`` or a local directory); each rank loads its own copy on its device.
Generation is batched (``batch_size`` requests, padded on the left); the prompt goes through the
processor's chat template (one ``{"type": "image"}`` per frame shown, then the text) or, for processors
without one, through ``prompt_template`` with ``{images}`` and ``{prompt}`` fields.

The backend is an ``nn.Module``: once loaded, the model is its sub-module ``model`` (and so the
``Captioner``'s), moved and put in train/eval mode with it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from torch import nn

from lightning_modules.captioning.backends.base import (
    CaptionBackend,
    CaptionOutput,
    CaptionRequest,
    parse_caption_list,
)

_DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_dtype(dtype: str, device: Any) -> Any:
    """``auto``: bf16 on a GPU that supports it, else fp16 on GPU, fp32 on CPU."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device is not None and torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class TransformersVLM(CaptionBackend, nn.Module):
    """A transformers vision-language model as a captioner.

    Args:
        model: hub name or local directory for ``from_pretrained``.
        processor: processor name/directory when it differs from ``model``.
        dtype: ``auto``, ``float32``, ``float16`` or ``bfloat16``.
        batch_size: requests per ``generate`` call.
        max_new_tokens: generation length limit (NarVid: 1024).
        min_new_tokens: optional lower bound.
        temperature: sampling temperature; 0 means greedy (NarVid/LLaVA: 0.2, sampled).
        top_p: nucleus sampling (null: the model's default).
        num_beams: beam search width (NarVid: 1).
        multi_strategy: for ``multi``: ``sample`` returns ``num_captions`` sampled sequences of one
            prompt; ``list`` generates one answer and parses a numbered list from it.
        use_chat_template: build the prompt with the processor's chat template.
        prompt_template: used when there is no chat template: ``{images}`` becomes one ``image_token``
            per image, ``{prompt}`` the instruction (default: LLaVA-1.5's ``USER: ... ASSISTANT:``).
        image_token: the image placeholder of ``prompt_template``.
        system_prompt: optional system turn for the chat template.
        trust_remote_code: forwarded to ``from_pretrained``.
        attn_implementation: e.g. ``sdpa`` or ``flash_attention_2`` (null: transformers' default).
        name: what records call the model (default: ``model``).
    """

    def __init__(self, model: str, processor: str | None = None,
                 dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto", batch_size: int = 8,
                 max_new_tokens: int = 128, min_new_tokens: int | None = None, temperature: float = 0.2,
                 top_p: float | None = None, num_beams: int = 1, multi_strategy: Literal["sample", "list"] = "sample",
                 use_chat_template: bool = True, prompt_template: str = "USER: {images}\n{prompt} ASSISTANT:",
                 image_token: str = "<image>", system_prompt: str | None = None, trust_remote_code: bool = False,
                 attn_implementation: str | None = None, name: str | None = None) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        super().__init__()
        self.model_path = model
        self.processor_path = processor or model
        self.dtype = dtype
        self.batch_size = max(1, batch_size)
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.num_beams = num_beams
        self.multi_strategy = multi_strategy
        self.use_chat_template = use_chat_template
        self.prompt_template = prompt_template
        self.image_token = image_token
        self.system_prompt = system_prompt
        self.trust_remote_code = trust_remote_code
        self.attn_implementation = attn_implementation
        self.name = name or model
        self.model: Any = None
        self.processor: Any = None
        self.device: Any = None

    @property
    def model_name(self) -> str:
        return self.name

    def setup(self, device: Any = None, datamodule: Any | None = None) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = torch.device(device) if device is not None else torch.device("cpu")
        kwargs: dict[str, Any] = {"dtype": resolve_dtype(self.dtype, self.device),
                                  "trust_remote_code": self.trust_remote_code}
        if self.attn_implementation:
            kwargs["attn_implementation"] = self.attn_implementation
        self.processor = AutoProcessor.from_pretrained(self.processor_path, trust_remote_code=self.trust_remote_code)
        self.model = AutoModelForImageTextToText.from_pretrained(self.model_path, **kwargs).to(self.device).eval()
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # decoder-only batched generation
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token

    # ------------------------------------------------------------------ prompts
    def build_prompt(self, prompt: str, num_images: int) -> str:
        template = getattr(self.processor, "chat_template", None)
        if self.use_chat_template and template:
            conv: list[dict[str, Any]] = []
            if self.system_prompt:
                conv.append({"role": "system", "content": [{"type": "text", "text": self.system_prompt}]})
            conv.append({"role": "user",
                         "content": [{"type": "image"}] * num_images + [{"type": "text", "text": prompt}]})
            return self.processor.apply_chat_template(conv, add_generation_prompt=True)
        return self.prompt_template.format(images=self.image_token * num_images, prompt=prompt)

    # ------------------------------------------------------------------ generation
    def generate(self, requests: list[CaptionRequest]) -> list[CaptionOutput]:
        if self.model is None:
            self.setup(None)
        out: list[CaptionOutput] = []
        for start in range(0, len(requests), self.batch_size):
            out.extend(self._generate_chunk(requests[start:start + self.batch_size]))
        return out

    def _generate_chunk(self, requests: list[CaptionRequest]) -> list[CaptionOutput]:
        import torch
        from PIL import Image

        n_seq = {r.num_captions for r in requests}
        n = n_seq.pop() if len(n_seq) == 1 else 1
        per_request = n if self.multi_strategy == "sample" else 1
        texts = [self.build_prompt(r.prompt, len(r.images)) for r in requests]
        images = [Image.fromarray(np.ascontiguousarray(img)) for r in requests for img in r.images]
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        inputs = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        do_sample = self.temperature > 0 or per_request > 1
        gen: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams,
                               "do_sample": do_sample, "num_return_sequences": per_request}
        if do_sample:
            gen["temperature"] = self.temperature if self.temperature > 0 else 1.0
            if self.top_p is not None:
                gen["top_p"] = self.top_p
        if self.min_new_tokens:
            gen["min_new_tokens"] = self.min_new_tokens
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        if getattr(tokenizer, "pad_token_id", None) is not None:
            gen["pad_token_id"] = tokenizer.pad_token_id
        with torch.inference_mode():
            seqs = self.model.generate(**inputs, **gen)
        decoded = self.processor.batch_decode(seqs[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        decoded = [d.strip() for d in decoded]
        outputs = []
        for i, req in enumerate(requests):
            mine = decoded[i * per_request:(i + 1) * per_request]
            if req.num_captions > 1 and self.multi_strategy == "list":
                mine = parse_caption_list(mine[0])[:req.num_captions]
            outputs.append(CaptionOutput(mine[:req.num_captions]))
        return outputs
