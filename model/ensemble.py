"""Fold ensembles in one network: M members that share the trunk, with stacked pools and heads.

Members trained on different folds share the frozen trunk but not eta or the head. Their
mean score is again one network of the same form on M copies of the features:

    s(I) = (1/M) sum_j (w_j . pool_{eta_j}(f) + b_j)
         = [w_1/M, ..., w_M/M] . pool_[eta_1, ..., eta_M]([f, ..., f]) + mean_j b_j

so a checkpoint holds one ViralityNet with `members = M` (NetworkConfig): M * L etas, one linear
head of M * L weights, and one forward pass; the viraliency map of eq. (7) is then the mean of
the members' maps.

Per-platform heads stack P such ensembles (platform p: members J_p) the same way, with P rows:

    s_p(I) = ((1/|J_p|) sum_{j in J_p} s_j(I) - shift_p) / scale_p     row p, zero off J_p

each standardised for its platform, and a gate (a linear unit per platform on GAP(f)) whose
softmax mixes them when the caller does not name the platform (NetworkConfig.platforms).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch
from torch import nn

from model.network import ViralityNet


def stack_members(members: Sequence[ViralityNet]) -> ViralityNet:
    """One network whose score is the mean of the members' scores (see above).

    The members must share the backbone, pooling and trunk weights (a fold ensemble on a frozen
    trunk); a member with a different trunk is refused, since only one trunk is kept.
    """
    stacked = _stacked(members, [])
    m = len(members)
    with torch.no_grad():
        stacked.head.weight.copy_(torch.cat([net.head.weight for net in members], dim=1) / m)
        stacked.head.bias.copy_(torch.stack([net.head.bias for net in members]).mean(0))
    return stacked.eval()


def stack_platforms(
    groups: Mapping[str, Sequence[ViralityNet]],
    gate: nn.Linear,
    shift: Sequence[float],
    scale: Sequence[float],
) -> ViralityNet:
    """One network with a standardised head per platform and the gate (see above); `groups`
    maps each platform's name to its members, in the order of the gate's outputs."""
    names = list(groups)
    members = [net for name in names for net in groups[name]]
    stacked = _stacked(members, names)
    own_gate = stacked.gate
    assert own_gate is not None  # the config names platforms
    if gate.weight.shape != own_gate.weight.shape:
        raise ValueError(
            f"the gate maps {gate.in_features} features to {gate.out_features} platforms; "
            f"the network needs {own_gate.in_features} to {own_gate.out_features}"
        )
    channels = members[0].head.in_features
    with torch.no_grad():
        stacked.head.weight.zero_()
        start = 0
        for p, name in enumerate(names):
            group = groups[name]
            weights = torch.cat([net.head.weight[0] for net in group]) / len(group)
            stacked.head.weight[p, start : start + len(group) * channels] = weights / scale[p]
            bias = torch.stack([net.head.bias[0] for net in group]).mean()
            stacked.head.bias[p] = (bias - shift[p]) / scale[p]
            start += len(group) * channels
        own_gate.load_state_dict(gate.state_dict())
    return stacked.eval()


def _stacked(members: Sequence[ViralityNet], platforms: list[str]) -> ViralityNet:
    """A network of len(members) members holding their shared trunk and stacked pools; the
    head (and gate) are left for the caller to fill."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    first = members[0]
    if first.config.members != 1 or first.config.platforms:
        raise ValueError("members must be single networks, not ensembles")
    trunk = _shared_state(first)
    for net in members[1:]:
        if replace(net.config, eta_init=first.config.eta_init) != first.config:
            raise ValueError(f"members differ in their network: {net.config} vs {first.config}")
        other = _shared_state(net)
        if any(not torch.equal(trunk[k], other[k]) for k in trunk):
            raise ValueError("members must share the trunk's (and objectness fusion's) weights")
    config = replace(first.config, members=len(members), platforms=platforms)
    stacked = ViralityNet(config, pretrained=False)
    stacked.preprocessing = first.preprocessing
    with torch.no_grad():
        stacked.trunk.load_state_dict(first.trunk.state_dict())
        if first.objectness is not None and stacked.objectness is not None:
            stacked.objectness.load_state_dict(first.objectness.state_dict())
        for name, p in stacked.pool.named_parameters():  # LENA / GNAP: eta
            p.copy_(torch.cat([dict(net.pool.named_parameters())[name] for net in members]))
    return stacked


def _shared_state(net: ViralityNet) -> dict[str, torch.Tensor]:
    """The weights an ensemble keeps once: the trunk's and the objectness fusion's."""
    state = {f"trunk.{k}": v for k, v in net.trunk.state_dict().items()}
    if net.objectness is not None:
        state.update({f"objectness.{k}": v for k, v in net.objectness.state_dict().items()})
    return state
