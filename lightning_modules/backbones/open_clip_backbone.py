"""CLIP (via open_clip) as a ``VideoTextBackbone``.

The trunk/head split is placed *after* CLIP's projections: the text trunk returns per-token states after
``ln_final`` and ``text_projection`` (so ``H == D``) and the frame trunk returns ``encode_image`` output
(``F == D``). The heads are then identities (sentence = EOT token, as in CLIP). This is what
CLIP4Clip-style methods need: word-level features already live in the joint space, and a frozen CLIP's
outputs can be cached in full.

Weights come from an open_clip pretrained tag (hub download, needs the network or a warm HF cache), a local
checkpoint file, or an open_clip ``local-dir:`` folder. Offline tests use the tiny random config
``vtr-tiny-clip`` shipped in ``model_configs/`` (registered with open_clip when this module is imported;
any other ``*.json`` dropped into that folder is found too).
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transformer import TextTransformer
from torch import Tensor, nn

from lightning_modules.backbones.base import TextFeatures, VideoTextBackbone, last_valid_token

MODEL_CONFIG_DIR = Path(__file__).resolve().with_name("model_configs")
LOCAL_DIR_PREFIX = "local-dir:"
# open_clip's own temperature / bias: the Lightning module owns its temperature, so these stay untouched.
_LOGIT_PARAMS = ("logit_scale", "logit_bias")
_HASH_CHUNK = 1 << 22

open_clip.add_model_config(MODEL_CONFIG_DIR)


# ------------------------------------------------------------------------------------------ weight identity
@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    """File hash memoised on (path, size, mtime) so repeated fingerprints of a big checkpoint are free."""
    del size, mtime_ns  # only part of the cache key
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"name", "size", "sha256"}`` of a weight file.

    A content hash rather than path + mtime: fingerprints key the feature cache, so they must survive
    copies and reinstalls into another venv (where the absolute path differs) yet catch a different file
    at the same path.
    """
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return {
        "name": resolved.name,
        "size": stat.st_size,
        "sha256": _sha256_cached(str(resolved), stat.st_size, stat.st_mtime_ns),
    }


def module_weights_sha256(module: nn.Module, skip: tuple[str, ...] = ()) -> str:
    """Content hash of a module's state dict: identifies randomly initialised trunks, which no file does."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if name in skip:
            continue
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rgb_triplet(values: Any) -> tuple[float, float, float]:
    """Three floats from a config's mean/std entry (open_clip stores lists or tuples)."""
    red, green, blue = (float(v) for v in values)
    return red, green, blue


def clip_valid_mask(input_ids: Tensor) -> Tensor:
    """True up to and including the last non-zero id of each row (i.e. SOT … EOT, padding excluded).

    Not ``input_ids != 0``: in CLIP's BPE id 0 is the byte-level token ``!``, which can occur inside a
    caption; a plain ``!= 0`` mask would then shift the "last valid token" away from EOT.
    """
    length = input_ids.shape[1]
    nonzero = (input_ids != 0).int()
    last = length - 1 - nonzero.flip(1).argmax(1)
    positions = torch.arange(length, device=input_ids.device)
    return positions.unsqueeze(0) <= last.unsqueeze(1)


# --------------------------------------------------------------------------------------------- backbone
class OpenCLIPBackbone(VideoTextBackbone):
    """An open_clip CLIP model split into trunks (both full towers) and identity heads.

    Args:
        model_name: open_clip architecture name (``open_clip.list_models()``, or a JSON config in
            ``lightning_modules/backbones/model_configs/``, e.g. ``vtr-tiny-clip``), or ``local-dir:/path``.
        pretrained: ``None`` (random init), an open_clip pretrained tag for ``model_name`` (e.g.
            ``openai``; downloaded from the hub), a checkpoint file (state dict or open_clip training
            checkpoint), or ``local-dir:/path`` / a directory holding ``open_clip_config.json`` + weights
            (the folder's config then defines the architecture; ``model_name`` is only a label).
        max_words: token sequence length (truncation, EOT kept); at most the model's context length.
        freeze_video: freeze the image tower (no grad, kept in eval mode) so frame features can be cached.
        freeze_text: freeze the text tower likewise.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "openai",
        max_words: int = 32,
        freeze_video: bool = False,
        freeze_text: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(pretrained, str) and pretrained.strip().lower() in ("none", "null", ""):
            # `--...pretrained null` on a command line reaches a `str | None` argument as the string 'None'
            pretrained = None
        self.model_name = model_name
        self.pretrained = pretrained
        self.freeze_video = freeze_video
        self.freeze_text = freeze_text

        self._weights_file: str | None = None  # checkpoint file that defines the weights, if any
        self._config_file: str | None = None  # open_clip_config.json of a local-dir source
        self._tag: str | None = None
        self._local_dir_weights: list[str] = []  # every weight file in a local-dir source (conservative)
        model, tokenizer_name = self._create_model(model_name, pretrained)
        self.model = model
        self.tokenizer = open_clip.get_tokenizer(tokenizer_name)

        tower = self._text_tower()
        self._check_text_tower(tower)
        context_length = int(tower.positional_embedding.shape[0])
        if not 1 < max_words <= context_length:
            raise ValueError(
                f"max_words={max_words} must be in [2, {context_length}] for open_clip model {model_name!r} "
                f"(its text context length is {context_length}); lower max_words."
            )
        self.max_words = max_words
        self.embed_dim = self._projection_dim(tower)

        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg.get("size", 224)
        if isinstance(size, list | tuple):
            if len(set(size)) != 1:
                raise ValueError(f"non-square image size {size} of {model_name!r} is unsupported")
            size = size[0]
        self.image_size = int(size)
        self.image_mean = rgb_triplet(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.image_std = rgb_triplet(cfg.get("std", open_clip.OPENAI_DATASET_STD))

        for name in _LOGIT_PARAMS:
            param = getattr(model, name, None)
            if isinstance(param, nn.Parameter):
                param.requires_grad_(False)
        if freeze_video:
            self.freeze_(model.visual)
        if freeze_text:
            for module in self._text_children():
                self.freeze_(module)
            for param in self._text_parameters():
                param.requires_grad_(False)

    # ----------------------------------------------------------------------------- construction
    def _create_model(self, model_name: str, pretrained: str | None) -> tuple[nn.Module, str]:
        """Build the open_clip model from the chosen weight source; returns it and the tokenizer name."""
        if model_name.startswith(LOCAL_DIR_PREFIX):
            if pretrained is not None:
                raise ValueError(
                    f"model_name={model_name!r} already names a local-dir (config + weights); "
                    f"set pretrained=None instead of {pretrained!r}."
                )
            return self._from_local_dir(model_name[len(LOCAL_DIR_PREFIX) :]), model_name
        if pretrained is not None and pretrained.startswith(LOCAL_DIR_PREFIX):
            folder = pretrained.removeprefix(LOCAL_DIR_PREFIX)
            return self._from_local_dir(folder), pretrained
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained is not None and pretrained not in tags and os.path.isdir(pretrained):
            return self._from_local_dir(pretrained), LOCAL_DIR_PREFIX + pretrained

        if open_clip.get_model_config(model_name) is None:
            candidate = MODEL_CONFIG_DIR / f"{model_name}.json"
            if candidate.is_file():  # a config dropped into the folder after import
                open_clip.add_model_config(candidate)
            else:
                raise ValueError(
                    f"model_name={model_name!r} is not an open_clip architecture. Use one of "
                    f"open_clip.list_models() or add {candidate} (an open_clip model config JSON)."
                )

        if pretrained is None:
            return open_clip.create_model(model_name, pretrained=None), model_name
        if pretrained in tags:
            self._tag = pretrained
            try:
                return open_clip.create_model(model_name, pretrained=pretrained), model_name
            except RuntimeError as err:
                raise RuntimeError(
                    f"Could not load open_clip weights {model_name!r}/pretrained={pretrained!r} ({err}). "
                    "Offline (HF_HUB_OFFLINE=1) this only works if they are already in the Hugging Face "
                    "cache; otherwise pass pretrained=<checkpoint file> or pretrained=None (random init)."
                ) from err
        if os.path.isfile(pretrained):
            self._weights_file = str(Path(pretrained).resolve())
            return open_clip.create_model(model_name, pretrained=self._weights_file), model_name
        raise ValueError(
            f"pretrained={pretrained!r} is neither an existing checkpoint file / local-dir folder nor a "
            f"known open_clip tag for model_name={model_name!r} (known tags: {tags or 'none'}). Pass an "
            "existing path (state dict, open_clip checkpoint, or 'local-dir:/folder' with "
            "open_clip_config.json), a listed tag, or pretrained=None for random initialisation."
        )

    def _from_local_dir(self, folder: str) -> nn.Module:
        """Config and weights both from an open_clip folder (``open_clip_config.json`` + checkpoint)."""
        path = Path(folder)
        config = path / "open_clip_config.json"
        if not config.is_file():
            raise ValueError(
                f"pretrained/model_name local-dir {str(path)!r} must be a folder containing "
                "open_clip_config.json ({'model_cfg': ..., 'preprocess_cfg': ...}) and a weights file "
                "(open_clip_model.safetensors, model.safetensors or *.pth)."
            )
        self._config_file = str(config.resolve())
        weights = sorted([*path.glob("*.safetensors"), *path.glob("*.bin"), *path.glob("*.pth")])
        model = open_clip.create_model(LOCAL_DIR_PREFIX + str(path))
        self._local_dir_weights = [str(w.resolve()) for w in weights]
        return model

    def _text_tower(self) -> nn.Module:
        """The module owning the text transformer's parts (flat in CLIP, ``.text`` in CustomTextCLIP)."""
        if isinstance(self.model, open_clip.CLIP):
            return self.model
        text = getattr(self.model, "text", None)
        if isinstance(text, TextTransformer):
            return text
        raise ValueError(
            f"{type(self.model).__name__} with text tower {type(text).__name__} is not supported: "
            "OpenCLIPBackbone needs open_clip's own causal text transformer (CLIP-style configs)."
        )

    @staticmethod
    def _check_text_tower(tower: nn.Module) -> None:
        """Reject text towers whose pooled feature is not the EOT token of a causal transformer."""
        pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
        if pool not in ("argmax", "eos"):
            raise ValueError(f"text pool_type {pool!r} unsupported (sentence = EOT token only); "
                             "choose a CLIP-style model_name")
        if getattr(tower, "attn_mask", None) is None:
            raise ValueError("bidirectional (no causal mask) text towers are unsupported")
        if getattr(tower, "cls_emb", None) is not None:
            raise ValueError("text towers with an appended CLS embedding (CoCa) are unsupported")

    @staticmethod
    def _projection_dim(tower: nn.Module) -> int:
        proj = tower.text_projection
        if proj is None:
            return int(tower.transformer.width)
        if isinstance(proj, nn.Linear):
            return int(proj.out_features)
        return int(proj.shape[1])

    def _text_children(self) -> list[nn.Module]:
        """Direct children of the open_clip model that belong to the text side (everything but ``visual``)."""
        return [module for name, module in self.model.named_children() if name != "visual"]

    def _text_parameters(self) -> list[nn.Parameter]:
        """Text-side parameters, incl. the bare ``positional_embedding``/``text_projection`` Parameters."""
        return [
            p
            for name, p in self.model.named_parameters()
            if not name.startswith("visual.") and name not in _LOGIT_PARAMS
        ]

    def train(self, mode: bool = True) -> OpenCLIPBackbone:
        """Switch mode, but keep frozen towers in eval mode (their outputs must match the cached ones)."""
        super().train(mode)
        if self.freeze_video and self.freeze_text:
            self.model.eval()
        if self.freeze_video:
            self.model.visual.eval()
        if self.freeze_text:
            for module in self._text_children():
                module.eval()
        return self

    # ----------------------------------------------------------------------------- text
    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """CLIP BPE to ``max_words`` (long captions are truncated with EOT kept last)."""
        ids = self.tokenizer(list(texts), context_length=self.max_words)
        return {"input_ids": ids, "attention_mask": clip_valid_mask(ids).long()}

    def text_trunk(self, tokens: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``CLIP.encode_text`` (open_clip 3.3.0) without EOT pooling, for any length ``L <= context``.

        Under the causal mask, position ``i`` only sees tokens ``<= i``, so running at ``L = max_words``
        instead of the full context gives exactly CLIP's features for the kept positions.
        """
        input_ids = tokens["input_ids"]
        length = input_ids.shape[1]
        mask = tokens.get("attention_mask")
        mask = clip_valid_mask(input_ids) if mask is None else mask.bool()
        tower = self._text_tower()
        cast_dtype = tower.transformer.get_cast_dtype()
        x = tower.token_embedding(input_ids).to(cast_dtype)
        x = x + tower.positional_embedding[:length].to(cast_dtype)
        x = tower.transformer(x, attn_mask=tower.attn_mask[:length, :length])
        x = tower.ln_final(x)
        proj = tower.text_projection
        if isinstance(proj, nn.Linear):
            x = proj(x)
        elif proj is not None:
            x = x @ proj
        return x, mask

    def token_embedding_layer(self) -> nn.Module:
        """CLIP's token-embedding lookup (the positional embedding is added after it)."""
        return self._text_tower().token_embedding

    def text_head(self, hidden: Tensor, mask: Tensor) -> TextFeatures:
        """Identity head: CLIP's sentence feature is its EOT token (the last valid one)."""
        return TextFeatures(sentence=last_valid_token(hidden, mask), tokens=hidden, mask=mask)

    def sentence_head(self, hidden: Tensor, mask: Tensor) -> Tensor:
        return last_valid_token(hidden, mask)

    # ----------------------------------------------------------------------------- video
    def frame_trunk(self, frames: Tensor) -> Tensor:
        """``encode_image`` (projected, unnormalised): ``[N, 3, S, S] -> [N, D]``."""
        return self.model.encode_image(frames)

    def frame_head(self, features: Tensor) -> Tensor:
        """Identity: the image projection already maps into the joint space."""
        return features

    def pretrained_logit_scale(self) -> float | None:
        """open_clip's ``logit_scale`` (log space): the checkpoint's value, or ``log(1/0.07)`` at random init."""
        value = getattr(self.model, "logit_scale", None)
        return float(value.detach().float()) if isinstance(value, Tensor) else None

    def clip_text_transformer(self) -> tuple[nn.ModuleList, Tensor] | None:
        tower = self._text_tower()
        return tower.transformer.resblocks, tower.positional_embedding.detach()

    # ----------------------------------------------------------------------------- caching facts
    def trunk_parameters(self) -> list[nn.Parameter]:
        """All open_clip parameters except its logit scale/bias (the method owns the temperature)."""
        return [p for name, p in self.model.named_parameters() if name not in _LOGIT_PARAMS]

    def _weights_identity(self) -> dict[str, Any]:
        if self._tag is not None:
            return {"tag": self._tag}
        if self._config_file is not None and self._local_dir_weights:
            return {
                "local_dir_config": file_identity(self._config_file),
                "files": [file_identity(p) for p in self._local_dir_weights],
            }
        if self._weights_file is not None:
            return {"file": file_identity(self._weights_file)}
        # Random init: only the current tensors identify it (hashing a tiny model takes milliseconds).
        return {"random_init_sha256": module_weights_sha256(self.model, skip=_LOGIT_PARAMS)}

    def trunk_fingerprint(self) -> dict[str, Any]:
        return {
            "backbone": type(self).__name__,
            "open_clip": open_clip.__version__,
            "model_name": self.model_name,
            "weights": self._weights_identity(),
            "max_words": self.max_words,
            "image_size": self.image_size,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }
