"""ExCae's ECS retriever: Eq. 2, the ablation switches, both evaluation routings, leakage-free scoring."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from datamodules.batch import MultiCaptions, PairBatch, TextBatch, VideoBatch
from lightning_modules.backbones import OpenCLIPBackbone
from lightning_modules.base import score_tiles
from lightning_modules.excae import ExCae
from tests.lightning_modules.batch_helpers import colour, text_and_video_batches


def tiny_excae(**kwargs) -> ExCae:
    torch.manual_seed(0)
    backbone = OpenCLIPBackbone("vtr-tiny-clip", pretrained=None, max_words=12)
    defaults = dict(num_experts=6, experts_per_group=2, expert_heads=2, expert_ffn=32, expert_dropout=0.0)
    return ExCae(backbone=backbone, **{**defaults, **kwargs}).eval()


def batches(n_videos: int = 5, n_texts: int = 7, frames: int = 4, k: int = 3) -> tuple[TextBatch, VideoBatch]:
    """K captions per video (video 1 has one fewer, so caption slots get padded)."""
    captions = [[f"caption {j} of video {i}: a {colour(i)} ball" for j in range(k - (i == 1))] for i in range(n_videos)]
    return text_and_video_batches({"multi": MultiCaptions(captions)}, n_videos, n_texts, frames)


def test_video_embedding_is_eq2_mixture_plus_token_mean() -> None:
    model = tiny_excae()
    _, video = batches()
    with torch.no_grad():
        out = model.encode_video(video)
        groups = model.video_tokens(video)
        tokens, valid = groups["both"]
        assert tokens.shape[1] == 3 + 4 and not valid[1, 2] and not valid[0, 3 + 3]  # caption and frame padding
        mean = (tokens * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)
        router_input = torch.cat([groups["captions"][0][:, 0], groups["frames"][0][:, 0]], -1)
        mixture, _, _ = model.moe(groups, router_input, 2, "topk")
    torch.testing.assert_close(out["video"], F.normalize(mixture + mean, dim=-1), atol=1e-5, rtol=1e-5)
    assert ((out["gates"] > 0).sum(-1) == 2).all()


def test_both_routings_are_views_and_eval_routing_is_reported() -> None:
    for routing in ("topk", "dense"):
        model = tiny_excae(eval_routing=routing, other_routing_view="always")
        text, video = batches()
        with torch.no_grad():
            sims = model.similarity(model.encode_text(text), model.encode_video(video))
        assert set(sims) == {"topk", "dense"} and not torch.allclose(sims["topk"], sims["dense"])
        assert torch.equal(model.fuse_views(sims), sims[routing])


def test_scoring_is_query_independent_and_tiles_agree() -> None:
    model = tiny_excae(other_routing_view="always")
    text, video = batches()
    with torch.no_grad():
        tf, vf = model.encode_text(text), model.encode_video(video)
        full = model.similarity(tf, vf)
        tiled = score_tiles(model.similarity, tf, vf, 3, 2)
        one = model.encode_video(VideoBatch(index=video.index[2:3], mask=video.mask[2:3], video_ids=["v2"],
                                            frames=video.frames[2:3],
                                            aux={"multi": MultiCaptions(video.aux["multi"].captions[2:3])}))
    for k in full:
        torch.testing.assert_close(tiled[k], full[k], atol=1e-5, rtol=1e-5)
    # a video's embedding does not depend on the other videos of its batch (no batch-level routing)
    torch.testing.assert_close(one["video"][0], vf["video"][2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("switches", [
    {}, {"use_ecs": False}, {"video_inputs": "frames", "experts_per_group": None},
    {"video_inputs": "captions", "experts_per_group": 6}, {"active_experts": 0}, {"num_captions": 1},
    {"balance_weight": 0.1}, {"expert_compute": "all"},
])
def test_training_loss_backpropagates_under_each_switch(switches: dict) -> None:
    model = tiny_excae(**switches).train()
    text, video = batches(n_videos=5, n_texts=5)
    loss, logs = model.training_loss(PairBatch(text=text, video=video))
    assert torch.isfinite(loss)
    loss.backward()
    trained = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    if switches.get("use_ecs", True) and switches.get("active_experts", 2) > 0:
        assert "moe" in trained
        assert "expert_balance" in logs
    assert ("loss_balance" in logs) == ("balance_weight" in switches)


def test_frames_only_reads_no_captions_and_captions_only_no_frames() -> None:
    _, video = batches()
    video.aux = {}
    with torch.no_grad():
        tiny_excae(video_inputs="frames", experts_per_group=6).encode_video(video)  # no captions needed
    with pytest.raises(KeyError, match="aux_captions"):
        tiny_excae().encode_video(video)
    _, video = batches()
    video.frames = None
    with torch.no_grad():
        tiny_excae(video_inputs="captions", experts_per_group=6).encode_video(video)


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="raise experts_per_group"):
        tiny_excae(video_inputs="frames")
    with pytest.raises(ValueError, match=r"active_experts must be in 0\.\.6"):
        tiny_excae(active_experts=7)
    _, video = batches()
    video.aux["multi"].captions[3] = []
    with pytest.raises(ValueError, match=r"\['v3'\] have no 'multi' captions"):
        tiny_excae().encode_video(video)


def test_topk_evaluation_runs_only_the_routed_experts_and_equals_dense_then_masked() -> None:
    """The headline (top-2) evaluation runs each video's 2 experts, not all 6, and scores what running every expert
    on every video and masking with the top-2 gates scores (the released module's way)."""
    model = tiny_excae()
    text, video = batches(n_videos=9)
    calls: list[int] = []
    for expert in model.moe.experts:
        expert.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        routed = model.encode_video(video)
        sim = model.similarity(model.encode_text(text), routed)
    assert sum(calls) == 9 * 2 and "video_other" not in routed and isinstance(sim, torch.Tensor)
    dense_then_masked = tiny_excae(expert_compute="all")
    with torch.no_grad():
        reference = dense_then_masked.encode_video(video)
    assert torch.equal(routed["gates"], reference["gates"])
    torch.testing.assert_close(routed["video"], reference["video"], atol=1e-6, rtol=0)
    # and the top-k view of a run that scores both views is the same vector
    both = tiny_excae(other_routing_view="always")
    with torch.no_grad():
        torch.testing.assert_close(both.encode_video(video)["video"], routed["video"], atol=1e-6, rtol=0)


def _in_loop(model: ExCae, testing: bool) -> ExCae:
    """``model`` as the validation (``testing`` False) or test loop's trainer has it."""
    model.trainer = SimpleNamespace(testing=testing, validating=not testing, sanity_checking=False,
                                     precision_plugin=SimpleNamespace(forward_context=contextlib.nullcontext))
    return model


@pytest.mark.parametrize("when,testing,expected", [("never", True, False), ("test", False, False),
                                                    ("test", True, True), ("always", False, True)])
def test_other_routing_view_is_scored_only_when_asked(when: str, testing: bool, expected: bool) -> None:
    model = _in_loop(tiny_excae(other_routing_view=when), testing)
    text, video = batches()
    with torch.no_grad():
        _, views = model.score(model.encode_text(text), model.encode_video(video))
    assert set(views) == ({"topk", "dense"} if expected else set())
    with pytest.raises(ValueError, match="other_routing_view"):
        tiny_excae(other_routing_view="sometimes")


@pytest.mark.parametrize("switches", [{}, {"video_inputs": "frames", "experts_per_group": None},
                                      {"video_inputs": "captions", "experts_per_group": 6}])
def test_evaluation_loop_runs_the_experts_once_over_the_gallery(switches: dict) -> None:
    """In the loops each batch keeps its expert inputs and ``score`` runs every expert once over the gathered
    gallery (``eval_video_chunk`` videos a pass): the embeddings of the per-batch path, in fewer, larger passes."""
    text, video = batches(n_videos=5)
    direct = tiny_excae(other_routing_view="always", **switches)
    looped = _in_loop(tiny_excae(other_routing_view="always", eval_video_chunk=4, **switches), testing=True)
    calls: list[int] = []
    for expert in looped.moe.experts:
        expert.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        halves = [looped.encode_video(VideoBatch(index=video.index[s], mask=video.mask[s], video_ids=video.video_ids[s],
                                                 frames=video.frames[s], aux={k: type(a)(a.captions[s])
                                                                             for k, a in video.aux.items()}))
                  for s in (slice(0, 2), slice(2, 5))]  # two loader batches
        assert not calls and all("video" not in half for half in halves)
        gathered = {k: torch.cat([h[k] for h in halves]) for k in halves[0]}
        finished = looped.gallery_features(gathered)
        assert sorted(calls) == sorted([4] * 6 + [1] * 6)  # dense: each expert once per chunk of 4 videos, then 1
        expected = direct.encode_video(video)
        sims = looped.score(looped.encode_text(text), gathered)[1]
    for key in ("video", "video_other", "gates"):
        torch.testing.assert_close(finished[key], expected[key], atol=1e-6, rtol=0)
    torch.testing.assert_close(sims["topk"], direct.similarity(direct.encode_text(text), expected)["topk"],
                               atol=1e-6, rtol=0)
