"""How good a caption source is for retrieval, measured on the test split without any trained retriever.

* ``caption_r1``: a video's caption alone as its representation - each ground-truth query ranks the test videos by
  the cosine between the query and their captions under a fixed sentence encoder (all-MiniLM-L6-v2, mean pooling,
  the offline text tower); R@1 of the paired video.
* ``family_r1``: the same ranking restricted to the query's near-duplicate family on SynthVTR (the video and its
  mutants, which differ in one attribute): how often a caption tells its video apart from the videos it is most
  easily confused with - CaRe-DPO's motivation (zero-shot captions "indistinguishable across visually similar
  videos"). Chance is 1 / family size.
* ``attribute_precision`` / ``attribute_recall`` (SynthVTR): the caption's mentioned colours, shapes, motions and
  backgrounds against the generator's ground truth (``datamodules/synthvtr/attributes.py``).
* ``distinct_captions`` (share of test videos whose caption no other test video has) and ``caption_words``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import yaml

from datamodules.base import VideoTextDataModule
from datamodules.captions import CaptionStore


def apply_data_overrides(data: dict[str, Any], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A copy of a LightningCLI ``data`` section with the ``--data.…=value`` arguments of ``overrides`` applied (the
    others are not about the data)."""
    import copy

    data = copy.deepcopy(data)
    for arg in overrides:
        if not arg.startswith("--data."):
            continue
        key, sep, raw = arg[len("--data."):].partition("=")
        if not sep:
            raise ValueError(f"override {arg!r}: use --data.<key>=<value>")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return data


def data_module_from_section(data: dict[str, Any], overrides: Sequence[str] = ()) -> VideoTextDataModule:
    """A LightningCLI ``data`` section (``class_path``/``init_args``), with ``--data.…=value`` overrides, as a data
    module."""
    from jsonargparse import ArgumentParser

    import datamodules.registry  # noqa: F401  (short class names)

    data = apply_data_overrides(data, overrides)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningDataModule, "data")
    namespace = parser.parse_object({"data": data})
    return parser.instantiate_classes(namespace).data


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling, the sentence-transformers recipe), frozen."""

    def __init__(self) -> None:
        from lightning_modules.backbones.two_tower import PretrainedTwoTower

        self.tower = PretrainedTwoTower(embed_dim=32, max_words=32, image_size=112, freeze_video=True,
                                        freeze_text=True).eval()

    @torch.no_grad()
    def __call__(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        from lightning_modules.components.pooling import masked_mean_pool

        parts = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tower.tokenize(texts[start:start + batch_size])
            hidden, mask = self.tower.text_trunk(tokens)
            parts.append(F.normalize(masked_mean_pool(hidden, mask), dim=-1))
        return torch.cat(parts)


def caption_quality(data: VideoTextDataModule, captions: str | Path, families: bool = True,
                    encoder: SentenceEncoder | None = None) -> dict[str, Any]:
    """The measures of the module docstring for one caption file on ``data``'s test split."""
    data.setup("test")
    split = data.splits["test"]
    ids = [v.video_id for v in split.videos]
    path = Path(captions)
    if not path.is_absolute() and not path.exists():  # relative to the data root, as data aux_captions are
        path = Path(data.root) / path
    store = CaptionStore.load(path, "supplement")
    store.require(ids)
    caption_of = [store[v].captions[0] for v in ids]
    encoder = encoder or SentenceEncoder()
    queries = encoder([t.text for t in split.texts])
    target = torch.tensor([t.video for t in split.texts])
    sims = queries @ encoder(caption_of).t()
    out: dict[str, Any] = {"captions": str(captions), "num_queries": len(split.texts), "num_videos": len(ids),
                           "caption_r1": float((sims.argmax(1) == target).float().mean() * 100)}
    root = Path(data.root)
    if families and (root / "synthvtr" / "specs.jsonl").is_file():
        from experiments.care_dpo.preferences import family_of

        family = family_of(data)
        fam = torch.tensor([family[v] for v in ids])
        same = fam[target].unsqueeze(1) == fam.unsqueeze(0)
        masked = sims.masked_fill(~same, -float("inf"))
        out["family_r1"] = float((masked.argmax(1) == target).float().mean() * 100)
        out["family_size"] = float(same.sum(1).float().mean())
    if (root / "synthvtr" / "video_facts.jsonl").is_file():
        from datamodules.synthvtr import load_video_facts
        from datamodules.synthvtr.attributes import attribute_scores

        out.update(attribute_scores(dict(zip(ids, caption_of, strict=True)), load_video_facts(root)))
    counts: dict[str, int] = {}
    for caption in caption_of:
        counts[caption] = counts.get(caption, 0) + 1
    out["distinct_captions"] = sum(1 for c in caption_of if counts[c] == 1) / len(caption_of)
    out["caption_words"] = sum(len(c.split()) for c in caption_of) / len(caption_of)
    return out
