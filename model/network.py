"""The siamese virality network (section 3.1) and its viraliency maps (eq. 7).

    s(I) = w . pool(trunk(I)) + b                     one score per image
    L    = BCE-with-logits(s(I) - s(J), v)            eq. (1), v = 1 when I is more viral

Both branches of the siamese pair are the same module: a pair is scored by one batched
forward pass over both images, so every parameter (trunk, pooling, eta, head) is shared.

Under fp16/bf16 autocast only the trunk runs in half precision: pooling, heads, gate and maps
run in float32 (`full_precision`). A head fitted by ridge regression on standardised features
folds the standardisation into large weights and a large bias whose terms cancel; in float16
that cancellation cost 0.04 of score on the GPU (bench/RESULTS.md), at no measurable speed.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.backbones import Backbone, Preprocessing, build_backbone
from model.lena import GlobalPool, build_pool


def full_precision(x: Tensor) -> AbstractContextManager[Any]:
    """Autocast off on x's device: what runs inside sees float32 (pass it `x.float()`)."""
    return torch.autocast(device_type=x.device.type, enabled=False)


@dataclass
class NetworkConfig:
    backbone: str = "mobilenet_v2"
    pooling: str = "lena"  # gap | gmp | gnap | lena
    eta_init: float = 0.5
    # ImageNet classes whose class activation maps are fused in (section 3.4); empty = off.
    objectness_classes: list[int] = field(default_factory=list)
    # A fold ensemble (model/ensemble.py): this many members' pools and heads, stacked.
    members: int = 1
    # Per-platform heads (model/ensemble.stack_platforms): one output per name, mixed by a gate
    # on the image's GAP features unless the caller names the platform; empty = one head.
    platforms: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkConfig:
        known = {k: data[k] for k in ("backbone", "pooling", "eta_init") if k in data}
        return cls(
            **known,
            objectness_classes=list(data.get("objectness_classes", [])),
            members=int(data.get("members", 1)),
            platforms=[str(p) for p in data.get("platforms", [])],
        )


class Objectness(nn.Module):
    """Objectness maps of section 3.4, fused into the latent concepts before pooling.

    The class activation maps of the chosen ImageNet classes are computed from the trunk's own
    features with the pretrained classifier's weights (frozen, a buffer), concatenated to the
    features and fused back to L channels by a 1x1 conv. The fusion starts as the identity on
    the features, so training starts from the plain pretrained network.

    The paper computes the maps with a separate, frozen, pretrained AlexNet. Sharing the trunk
    costs nothing extra at inference, and the maps are exactly the pretrained classifier's CAMs
    while the trunk is (as by default: `--freeze-blocks`) frozen at its ImageNet weights up to
    its last trained block; the blocks that are fine-tuned move the maps with them.
    """

    def __init__(self, classifier: nn.Linear, class_ids: list[int], channels: int) -> None:
        super().__init__()
        weight = classifier.weight.detach()[torch.tensor(class_ids)].clone()  # (K, L)
        self.register_buffer("cam_weight", weight)
        self.fuse = nn.Conv2d(channels + len(class_ids), channels, kernel_size=1, bias=False)
        with torch.no_grad():
            self.fuse.weight.zero_()
            self.fuse.weight[:, :channels, 0, 0].copy_(torch.eye(channels))

    def class_maps(self, f: Tensor) -> Tensor:
        """CAM_k(w, h) = sum_l W_kl f_l(w, h), W = classifier rows. (B, L, h, w) -> (B, K, h, w)"""
        return torch.einsum("blhw,kl->bkhw", f, self.cam_weight.to(f.dtype))

    def forward(self, f: Tensor) -> Tensor:  # (B, L, h, w) -> (B, L, h, w)
        return self.fuse(torch.cat([f, self.class_maps(f)], dim=1))


def most_activated_classes(pooled: Tensor, classifier: nn.Linear, k: int) -> list[int]:
    """The k ImageNet classes with the highest mean softmax over a dataset (section 3.4).

    pooled: (N, L) globally average-pooled trunk features of the dataset's images.
    """
    with torch.no_grad():
        probabilities = torch.softmax(classifier(pooled.float()), dim=1).mean(dim=0)  # (1000,)
    return sorted(probabilities.topk(k).indices.tolist())


class ViralityNet(nn.Module):
    """Fully convolutional trunk -> global pooling -> one linear unit (Figure 2)."""

    def __init__(self, config: NetworkConfig, pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        backbone: Backbone = build_backbone(config.backbone, pretrained)
        self.preprocessing: Preprocessing = backbone.preprocessing
        self.pretrained_loaded = backbone.pretrained
        self.trunk = backbone.trunk
        self.objectness: Objectness | None = None
        if config.objectness_classes:
            if backbone.classifier is None:
                raise ValueError(f"backbone {config.backbone!r} has no ImageNet classifier")
            self.objectness = Objectness(
                backbone.classifier, config.objectness_classes, backbone.channels
            )
        channels = backbone.channels * config.members
        self.pool: GlobalPool = build_pool(config.pooling, channels, config.eta_init)
        self.head = nn.Linear(channels, len(config.platforms) or 1)
        # Platform logits from the trunk's globally averaged features (one copy of them).
        self.gate = (
            nn.Linear(backbone.channels, len(config.platforms)) if config.platforms else None
        )

    def feature_maps(self, images: Tensor) -> Tensor:
        """The latent concept detectors f_l. (B, 3, S, S) -> (B, L, h, w)

        A fold ensemble of M members sees M copies of them, (B, M * L, h, w): member j pools
        and scores copy j (model/ensemble.py).
        """
        f = self.trunk(images)
        f = self.objectness(f) if self.objectness is not None else f
        return f.repeat(1, self.config.members, 1, 1) if self.config.members > 1 else f

    def score_features(self, f: Tensor) -> Tensor:
        """s = w . pool(f) + b (per-platform heads: gated, see `mixing`). (B, L, h, w) -> (B,)"""
        with full_precision(f):
            f = f.float()
            scores = self.head(self.pool(f))
            if self.gate is None:
                return scores.squeeze(-1)
            return (self.mixing(f) * scores).sum(dim=1)

    def mixing(self, f: Tensor, platform: Tensor | None = None) -> Tensor:
        """Per-platform heads: how much each platform's score counts, (B, P) rows summing to 1.

        p(I) = softmax(W_g . GAP(f(I)) + b_g), the gate's guess of the image's platform; where
        `platform[i]` >= 0 names one, row i is that platform's one-hot instead.
        """
        if self.gate is None:
            raise ValueError("this network has one head, not per-platform heads")
        weights = torch.softmax(self.gate(f[:, : self.gate.in_features].mean(dim=(2, 3))), dim=1)
        if platform is not None:
            chosen = platform >= 0
            one_hot = F.one_hot(platform.clamp(min=0), weights.shape[1]).to(weights.dtype)
            weights = torch.where(chosen[:, None], one_hot, weights)
        return weights

    def forward(self, images: Tensor) -> Tensor:  # (B, 3, S, S) -> (B,)
        return self.score_features(self.feature_maps(images))

    def pair_logits(self, images_a: Tensor, images_b: Tensor) -> Tensor:
        """s(a) - s(b) from one forward pass over both branches. -> (B,)"""
        scores = self(torch.cat([images_a, images_b]))
        return scores[: len(images_a)] - scores[len(images_a) :]

    def viraliency(
        self, images: Tensor, dense: bool = False, platform: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Scores and viraliency maps at feature resolution. -> (B,), (B, h, w)

        eq. (7): a(w, h) = sum_l w_l f_l^eta(w, h), where f_l^eta keeps only the N_l positions
        the pooling selected in channel l. dense=True gives eq. (3) instead (every position).
        Per-platform heads: score and map are the `mixing` of the heads' (`platform`: (B,)
        indices into config.platforms, -1 = the gate's guess; None = all guessed).
        """
        scores, maps, weights = self._heads(images, dense, platform)
        if weights is None:
            return scores[:, 0], maps[:, 0]
        return _mix(weights, scores, maps)

    def platform_viraliency(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Every choice a caller can make at once: column 0 the gate's mixture, column 1 + p
        platform p's own head. -> (B, 1 + P), (B, 1 + P, h, w); (B, 1), (B, 1, h, w) for one head.
        """
        scores, maps, weights = self._heads(images, dense=False, platform=None)
        if weights is None:
            return scores, maps
        mixed, mixed_map = _mix(weights, scores, maps)
        return torch.cat([mixed[:, None], scores], dim=1), torch.cat([mixed_map[:, None], maps], 1)

    def _heads(
        self, images: Tensor, dense: bool, platform: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Every head's score and map, and the mixing weights (None for one head).
        -> (B, P), (B, P, h, w), (B, P) | None"""
        f = self.feature_maps(images)
        with full_precision(f):
            f = f.float()
            scores = self.head(self.pool(f))
            weights = None if self.gate is None else self.mixing(f, platform)
            if not dense:
                f = f * self.pool.selection_mask(f)
            maps = torch.einsum("blhw,pl->bphw", f, self.head.weight)
        return scores, maps, weights


def _mix(weights: Tensor, scores: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
    """Per-platform heads' scores (B, P) and maps (B, P, h, w), weighted by (B, P) -> (B,),
    (B, h, w): the map of a weighted score is the same weighting of the maps (eq. 7 is linear)."""
    return (weights * scores).sum(dim=1), torch.einsum("bp,bphw->bhw", weights, maps)


def pairwise_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Eq. (1) as a mean over pairs: sigmoid cross-entropy on s(I) - s(J), computed stably."""
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
