"""``PrefixCaptioner`` on a tiny random Llama (``tests/caption_helpers.py``): the teacher-forced caption log-likelihood
against a hand computation from the LM's logits, padding invariance, where gradients go, generation, checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lightning_modules.backbones.base import TextFeatures, VideoTextBackbone
from lightning_modules.captioning import PrefixCaptioner
from tests.caption_helpers import save_tiny_llama

FEATURES = 6  # F of the fake frame features
PROMPTS = ["describe this image", "USER: describe the video ASSISTANT:"]
TARGETS = ["a red circle moves left on the grass", "a circle"]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _captioner(lm_dir: Path, seed: int = 0, **kwargs: Any) -> PrefixCaptioner:
    torch.manual_seed(seed)
    model = PrefixCaptioner(str(lm_dir), feature_dim=FEATURES, num_prefix=3, **kwargs)
    with torch.no_grad():  # adapters start as a no-op (B = 0) and slots at zero: give both a value to test
        for name, p in model.named_parameters():
            if name.endswith(("lora_B", "slot_embedding")):
                p.normal_(0.0, 0.5)
    return model


def _features(batch: int = 2, frames: int = 4, seed: int = 1) -> Tensor:
    return torch.randn(batch, frames, FEATURES, generator=torch.Generator().manual_seed(seed))


def _by_hand(model: PrefixCaptioner, features: Tensor, prompt: str, target: str) -> Tensor:
    """One unpadded row: [BOS] [prefix] [prompt] [target] [EOS] through the LM, log-softmax gathered at the target."""
    embed = model.lm.get_input_embeddings()
    tok = model.tokenizer
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    prefix = model.projector(features[None])
    inputs = torch.cat([embed(torch.tensor([[tok.bos_token_id]])), prefix,
                        embed(torch.tensor([prompt_ids + target_ids]))], dim=1)
    logprobs = torch.log_softmax(model.lm(inputs_embeds=inputs).logits[0].float(), dim=-1)
    start = 1 + model.num_prefix + len(prompt_ids)  # position of the first target token
    return sum(logprobs[start + j - 1, t] for j, t in enumerate(target_ids))


@pytest.mark.parametrize("keeps_logits", [True, False], ids=["logits_to_keep", "all_logits"])
@pytest.mark.parametrize("lm_training", ["frozen", "lora"])
def test_sequence_logprob_is_the_hand_computed_sum_of_target_token_logprobs(lm_dir: Path, lm_training: str,
                                                                            keeps_logits: bool):
    model = _captioner(lm_dir, lm_training=lm_training).eval()
    assert model._keeps_logits  # the test LM (Llama) takes logits_to_keep; False is the path of an LM that does not
    model._keeps_logits = keeps_logits
    features = _features()
    got = model.sequence_logprob(features, PROMPTS, TARGETS)
    want = torch.stack([_by_hand(model, features[i], PROMPTS[i], TARGETS[i]) for i in range(2)])
    assert got.shape == (2,)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert (got < 0).all()
    # the prompt is context: it changes the score without being scored
    assert not torch.allclose(model.sequence_logprob(features, PROMPTS[::-1], TARGETS), got)


def test_sequence_logprob_is_padding_invariant(lm_dir: Path):
    model = _captioner(lm_dir).eval()
    features = _features(batch=3)
    alone = model.sequence_logprob(features[:1], ["hi"], ["a circle"])
    long_prompt, long_target = "USER: describe every detail of the video " * 3, TARGETS[0] * 2
    batched = model.sequence_logprob(features, ["hi", long_prompt, "a"], ["a circle", long_target, "grass"])
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-5, atol=1e-4)
    # padded frames of a shorter video are ignored when masked
    padded = torch.cat([features[:1], 100 * torch.randn(1, 3, FEATURES)], dim=1)
    mask = torch.tensor([[True] * 4 + [False] * 3])
    torch.testing.assert_close(model.sequence_logprob(padded, ["hi"], ["a circle"], frame_mask=mask), alone,
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("lm_training", ["frozen", "lora", "full"])
def test_gradients_reach_the_projector_and_what_trains_of_the_lm(lm_dir: Path, lm_training: str):
    model = _captioner(lm_dir, lm_training=lm_training).train()
    model.sequence_logprob(_features(), PROMPTS, TARGETS).sum().backward()
    for name, p in model.projector.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    adapters = {n: p for n, p in model.lm.named_parameters() if "lora_" in n}
    base = {n: p for n, p in model.lm.named_parameters() if "lora_" not in n}
    if lm_training == "lora":
        assert len(adapters) == 2 * 2 * 2  # A and B of q_proj and v_proj in 2 layers
        # B starts at zero, so only B has a non-zero gradient at the first step (A's is B^T-weighted)
        assert all(p.grad is not None for p in adapters.values())
        assert all(p.grad.abs().sum() > 0 for n, p in adapters.items() if "lora_B" in n)
    else:
        assert not adapters
    if lm_training == "full":
        assert all(p.requires_grad for p in base.values())
        assert base["model.layers.0.self_attn.q_proj.weight"].grad.abs().sum() > 0
    else:
        assert not any(p.requires_grad or p.grad is not None for p in base.values())


def test_generate_returns_strings_independent_of_padding(lm_dir: Path):
    model = _captioner(lm_dir).eval()
    features = _features()
    batched = model.generate(features, PROMPTS, max_new_tokens=5)
    assert len(batched) == 2 and all(isinstance(t, str) for t in batched)
    alone = [model.generate(features[i:i + 1], [PROMPTS[i]], max_new_tokens=5)[0] for i in range(2)]
    assert batched == alone  # greedy: left padding changes nothing
    torch.manual_seed(0)
    sampled = model.generate(features, PROMPTS, max_new_tokens=5, temperature=1.0, num_return_sequences=3)
    assert len(sampled) == 6 and all(isinstance(t, str) for t in sampled)


def test_state_round_trip_keeps_only_what_trains(lm_dir: Path, tmp_path: Path):
    model = _captioner(lm_dir).eval()
    state = model.state_dict()
    assert state and all(k.startswith("projector.") or "lora_" in k for k in state)
    torch.save(state, tmp_path / "captioner.pt")
    other = _captioner(lm_dir, seed=1).eval()  # another projector and other adapters
    features = _features()
    assert not torch.allclose(other.sequence_logprob(features, PROMPTS, TARGETS),
                              model.sequence_logprob(features, PROMPTS, TARGETS))
    other.load_state_dict(torch.load(tmp_path / "captioner.pt", weights_only=True))  # strict
    torch.testing.assert_close(other.sequence_logprob(features, PROMPTS, TARGETS),
                               model.sequence_logprob(features, PROMPTS, TARGETS))
    assert other.generate(features, PROMPTS, max_new_tokens=4) == model.generate(features, PROMPTS, max_new_tokens=4)
    # as a sub-module (how a LightningModule holds it), and with the frozen weights kept on request
    holder = nn.ModuleDict({"captioner": model})
    assert set(holder.state_dict()) == {f"captioner.{k}" for k in state}
    nn.ModuleDict({"captioner": other}).load_state_dict(holder.state_dict())
    full = _captioner(lm_dir, checkpoint_frozen=True).state_dict()
    assert set(full) > set(state) and "lm.model.embed_tokens.weight" in full


class _MeanColourTower(VideoTextBackbone):
    """A video tower stand-in: frame feature = a linear map of the frame's mean colour."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, FEATURES)

    def frame_trunk(self, frames: Tensor) -> Tensor:
        return self.proj(frames.mean(dim=(-1, -2)))

    def frame_head(self, features: Tensor) -> Tensor:
        return features

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        raise NotImplementedError

    def text_trunk(self, tokens: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def text_head(self, hidden: Tensor, mask: Tensor) -> TextFeatures:
        raise NotImplementedError

    def trunk_fingerprint(self) -> dict[str, Any]:
        return {}


def test_frames_go_through_the_frozen_video_tower(lm_dir: Path):
    tower = _MeanColourTower()
    model = _captioner(lm_dir, video_tower=tower).train()
    frames = torch.rand(2, 4, 3, 8, 8)
    features = tower.frame_trunk(frames.flatten(0, 1)).view(2, 4, -1).detach()
    from_frames = model.sequence_logprob(frames, PROMPTS, TARGETS)
    torch.testing.assert_close(from_frames, model.sequence_logprob(features, PROMPTS, TARGETS))
    from_frames.sum().backward()
    assert not tower.training and all(p.grad is None and not p.requires_grad for p in tower.parameters())
    assert not any(k.startswith("video_tower.") for k in model.state_dict())
    with pytest.raises(ValueError, match="no video_tower"):
        _captioner(lm_dir).sequence_logprob(frames, PROMPTS, TARGETS)
