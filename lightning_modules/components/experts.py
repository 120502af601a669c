"""A mixture of transformer experts over groups of tokens, routed per sample (ExCae's ECS, §4.2).

Kept apart from ``excae.py`` because nothing in it is specific to captions: a sample brings named token groups
(ExCae: its captions, its frames, both), each expert reads one group, a router turns one vector per sample into
gates over the experts, and the output is the gate-weighted sum of the experts' first tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

Routing = Literal["topk", "dense"]
ExpertCompute = Literal["routed", "all"]


def assign_expert_groups(groups: Sequence[str], num_experts: int, experts_per_group: int | None = None) -> list[str]:
    """The group each expert reads: groups in order, ``experts_per_group`` each, until ``num_experts``.

    As the released ECS module: 16 experts, 6 per group over (captions, frames, both) -> 6 / 6 / 4.
    ``experts_per_group`` None takes ``ceil(num_experts / len(groups))`` (6 for 16 over three groups, 16 for one
    group). More experts than ``len(groups) * experts_per_group`` is a ValueError (the released code silently
    builds fewer).
    """
    if experts_per_group is None:
        experts_per_group = math.ceil(num_experts / max(1, len(groups)))
    if num_experts < 1 or experts_per_group < 1:
        raise ValueError(f"num_experts ({num_experts}) and experts_per_group ({experts_per_group}) must be >= 1")
    if num_experts > len(groups) * experts_per_group:
        raise ValueError(f"num_experts={num_experts} > {len(groups)} group(s) x experts_per_group={experts_per_group};"
                         f" raise experts_per_group to at least {math.ceil(num_experts / len(groups))}")
    return [g for g in groups for _ in range(experts_per_group)][:num_experts]


def route(logits: Tensor, active: int, routing: Routing) -> Tensor:
    """Gates ``[B, E]`` from router logits.

    ``topk``: keep the ``active`` largest logits of each row, softmax over them, zero elsewhere (ECS training);
    ``active`` 0 gives all-zero gates (no expert). ``dense``: softmax over every expert (the released code's
    evaluation).
    """
    if routing == "dense":
        return torch.softmax(logits.float(), dim=-1)
    if active < 0 or active > logits.shape[-1]:
        raise ValueError(f"active experts must be in 0..{logits.shape[-1]}, got {active}")
    gates = torch.zeros_like(logits, dtype=torch.float32)
    if active == 0:
        return gates
    top = logits.float().topk(active, dim=-1)
    return gates.scatter(-1, top.indices, torch.softmax(top.values, dim=-1))


def load_balance_loss(logits: Tensor, gates: Tensor) -> Tensor:
    """Switch-Transformer balance term ``E * sum_e f_e * P_e`` (1 when usage is uniform).

    ``f_e``: the fraction of routing slots that went to expert ``e`` (``gates > 0``, every sample's slots
    summing to 1); ``P_e``: the mean router probability of ``e`` (a dense softmax of ``logits``). Only ``P``
    carries gradient, as in Switch. Not in the released ECS code; an option here.
    """
    chosen = (gates > 0).float()
    fraction = (chosen / chosen.sum(-1, keepdim=True).clamp_min(1)).mean(0)
    probability = torch.softmax(logits.float(), dim=-1).mean(0)
    return logits.shape[-1] * (fraction * probability).sum()


class TokenExpert(nn.Module):
    """One ECS expert: a post-norm transformer encoder (ReLU FFN, dropout) and a final LayerNorm; its output is
    the first token. No positional embedding and no CLS token, as released; padded tokens are masked out
    (the released code feeds fixed K and T with no mask, which this equals when nothing is padded)."""

    def __init__(self, dim: int, heads: int = 8, layers: int = 1, ffn: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, ffn, dropout, activation="relu", batch_first=True,
                                           norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor, valid: Tensor) -> Tensor:
        """``tokens [B, N, D]``, ``valid [B, N]`` (True = a real token) -> ``[B, D]``."""
        return self.norm(self.encoder(tokens, src_key_padding_mask=~valid))[:, 0]


class MixtureOfTokenExperts(nn.Module):
    """Experts over named token groups with an MLP router (ECS).

    Args:
        dim: token width.
        expert_groups: the group each expert reads (``assign_expert_groups``).
        router_in: width of the router's input vector.
        router_hidden: hidden width of the router MLP (ECS: 256).
        heads, layers, ffn, dropout: each expert's transformer encoder.
        compute: ``routed`` runs each expert only on the samples whose gate for it is non-zero (the same
            output as ``all`` up to float rounding, cheaper under top-k); ``all`` runs every expert on every
            sample, as the released code. Under gradient, both give every expert a gradient: an expert no sample
            is routed to gets exactly zero under ``all`` (its gate is 0 for every sample), and ``routed`` gives it
            the same zeros without running it, so the optimiser's state, weight decay and step count move as
            under ``all`` (with ``grad = None`` an optimiser would skip the expert altogether).
    """

    def __init__(self, dim: int, expert_groups: Sequence[str], router_in: int, router_hidden: int = 256,
                 heads: int = 8, layers: int = 1, ffn: int = 2048, dropout: float = 0.1,
                 compute: ExpertCompute = "routed") -> None:
        super().__init__()
        self.expert_groups = list(expert_groups)
        self.compute = compute
        self.router = nn.Sequential(nn.Linear(router_in, router_hidden), nn.ReLU(), nn.Linear(router_hidden,
                                                                                              len(expert_groups)))
        self.experts = nn.ModuleList(TokenExpert(dim, heads, layers, ffn, dropout) for _ in expert_groups)

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def forward(self, groups: dict[str, tuple[Tensor, Tensor]], router_input: Tensor, active: int,
                routing: Routing) -> tuple[Tensor, Tensor, Tensor]:
        """Mixture ``[B, D]`` (float32), gates ``[B, E]`` and router logits ``[B, E]``.

        ``groups`` maps a group name to ``(tokens [B, N, D], valid [B, N])``.
        """
        mixtures, gates, logits = self.mixtures(groups, router_input, active, (routing,))
        return mixtures[routing], gates[routing], logits

    def mixtures(self, groups: dict[str, tuple[Tensor, Tensor]], router_input: Tensor, active: int,
                 routings: Sequence[Routing]) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        """The mixture and gates under each of ``routings`` from one router pass and one pass of each expert.

        With ``routed`` compute an expert runs on the samples some routing gives it a non-zero gate (under
        ``dense`` that is every sample), so evaluating top-k and dense together costs what dense alone does.
        """
        logits = self.router(router_input)
        gates = {r: route(logits, active, r) for r in routings}
        batch, dim = router_input.shape[0], self.experts[0].norm.normalized_shape[0]
        out = {r: torch.zeros(batch, dim, device=router_input.device, dtype=torch.float32) for r in routings}
        unrouted: list[nn.Module] = []
        for e, (expert, group) in enumerate(zip(self.experts, self.expert_groups, strict=True)):
            tokens, valid = groups[group]
            if self.compute == "routed":
                rows = torch.stack([g[:, e] for g in gates.values()]).ne(0).any(0).nonzero().squeeze(-1)
                if rows.numel() == 0:
                    if torch.is_grad_enabled():
                        unrouted.append(expert)
                    continue
                expert_out = expert(tokens[rows], valid[rows]).float()
                for r, g in gates.items():
                    # index_put_ with accumulate: index_add (in or out of place) walks the whole [B, D] output on
                    # the CPU, ~100x slower here for a few dozen rows
                    out[r].index_put_((rows,), g[rows, e, None] * expert_out, accumulate=True)
            else:
                expert_out = expert(tokens, valid).float()
                for r, g in gates.items():
                    out[r] = out[r] + g[:, e, None] * expert_out
        idle = [p for expert in unrouted for p in expert.parameters() if p.requires_grad]
        if idle:
            # 0 x (sum of the experts' parameters): adds exactly 0 to the output and puts every parameter of the
            # unrouted experts in the graph with gradient 0, what ``all`` compute gives them (see ``compute``)
            zero = 0.0 * torch.stack([p.sum() for p in idle]).sum().float()
            out = {r: v + zero for r, v in out.items()}
        return out, gates, logits


def expert_usage(gates: Tensor, active: int, groups: Sequence[str]) -> dict[str, object]:
    """How often each expert is among a sample's ``active`` largest gates, its mean gate, and the usage entropy.

    ``gates [N, E]`` over the evaluated videos. The entropy (bits) of the selection frequencies and
    ``2 ** entropy`` ("effective experts", E when usage is uniform) summarise the histogram.
    """
    n, e = gates.shape
    counts = torch.zeros(e)
    if active > 0 and n:
        counts = torch.bincount(gates.float().topk(min(active, e), dim=-1).indices.flatten().cpu(),
                                minlength=e).float()
    freq = counts / counts.sum().clamp_min(1)
    entropy = float(-(freq[freq > 0] * freq[freq > 0].log2()).sum())
    mean_gate = gates.float().mean(0).cpu() if n else torch.zeros(e)
    return {"videos": n, "active": active, "entropy_bits": round(entropy, 4),
            "effective_experts": round(2 ** entropy, 3),
            "experts": [{"index": i, "group": groups[i], "selected": int(counts[i]), "mean_gate": round(float(g), 5)}
                        for i, g in enumerate(mean_gate)]}
