"""ViralNet: pairwise spatial transformer networks (Dubey & Agarwal, MM 2017, section 3.2).

One branch of the siamese pair, for an image I (both images share every weight):

    I_k    = I downsampled by 2^k, k < K                    the pyramid (K = 1: ViralNet,
    p_k    = loc_k(trunk(I_k))        (B, 3) = (s, t_x, t_y)  K = 3: ViralNet-M, eq. (6))
    C_k    = crop(I_k, p_k)           (B, 3, c, c)            the spatial transformers
    phi(X) = GAP(trunk(X))            (B, L)                  the shared feature extractor
    s(I)   = w . [phi(I), phi(C_0), ..., phi(C_{K-1}), g(I)] + b   the ranker (one linear unit)

g(I) are the frozen category features of ViralNet-C / -MC (section 3.2, "category supplement"),
empty otherwise. Localiser k starts at the centred crop of side scale_init / 2^k (scale
initialisations 1, 0.5, 0.25 times the single-scale one, section 4).

Training loss (section 3.4): eq. (1) on s(I) - s(J) plus the spatial penalty of every
transform of both images (model/stn.py). Since phi ends in global average pooling, the ranker's
weights on phi(I) give a class activation map of the whole image: a(h, w) = w_0 . f(h, w).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.backbones import Backbone, Preprocessing, build_backbone
from model.categories import CategoryHead
from model.network import full_precision
from model.stn import Localiser, affine_crop, shrink_penalty, spatial_penalty

ARCHS = ("viralnet", "viralnet-m", "viralnet-c", "viralnet-mc")


@dataclass
class ViralNetConfig:
    backbone: str = "mobilenet_v2"
    scales: int = 3  # 1 = ViralNet, 3 = ViralNet-M (the pyramid I, I/2, I/4)
    scale_init: float = 2 / 3  # side of the initial centred crop at level 0, as a fraction
    crop_size: int = 112  # the crops' side in pixels, as fed to the trunk
    input_size: int = 0  # whole-image side; 0 = the backbone's default
    # Category supplement: "none", "imagenet" (the trunk's ImageNet class probabilities) or
    # "probe" (a linear probe trained beforehand on the data's category labels, frozen).
    categories: str = "none"
    category_names: list[str] = field(default_factory=list)

    @property
    def arch(self) -> str:
        """viralnet, viralnet-m, viralnet-c or viralnet-mc."""
        suffix = ("m" if self.scales > 1 else "") + ("c" if self.categories != "none" else "")
        return "viralnet" + (f"-{suffix}" if suffix else "")

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ViralNetConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class Explanation(NamedTuple):
    scores: Tensor  # (B,) s(I)
    maps: Tensor  # (B, h, w) the ranker's class activation map on the whole image
    transforms: Tensor  # (B, K, 3) (s, t_x, t_y) per pyramid level


class ViralNet(nn.Module):
    def __init__(self, config: ViralNetConfig, pretrained: bool = True) -> None:
        super().__init__()
        if config.scales < 1:
            raise ValueError(f"scales must be >= 1, got {config.scales}")
        self.config = config
        backbone: Backbone = build_backbone(config.backbone, pretrained)
        size = config.input_size or backbone.preprocessing.input_size
        self.preprocessing = Preprocessing(
            size, backbone.preprocessing.mean, backbone.preprocessing.std
        )
        self.pretrained_loaded = backbone.pretrained
        self.trunk = backbone.trunk
        channels = backbone.channels
        self.localisers = nn.ModuleList(Localiser(channels, init) for init in level_inits(config))
        self.categories = CategoryHead.build(
            config.categories, config.category_names, config.backbone, backbone
        )
        n_inputs = (1 + config.scales) * channels + self.categories.size
        self.ranker = nn.Linear(n_inputs, 1)

    # -- the pieces, so training can reuse cached trunk features of the pyramid -------------

    def pyramid(self, images: Tensor) -> list[Tensor]:
        """[I, I/2, I/4][:K] by 2^k x 2^k average pooling. (B, 3, S, S) -> K x (B, 3, S/2^k, ..)"""
        return [images if k == 0 else F.avg_pool2d(images, 2**k) for k in range(self.config.scales)]

    def level_features(self, levels: list[Tensor]) -> list[Tensor]:
        """trunk(I_k) for each level. -> K x (B, L, h_k, w_k)"""
        return [self.trunk(level) for level in levels]

    def transforms(self, features: list[Tensor]) -> Tensor:
        """p_k = loc_k(trunk(I_k)). -> (B, K, 3)"""
        return torch.stack([loc(f) for loc, f in zip(self.localisers, features, strict=True)], 1)

    def crop_features(self, levels: list[Tensor], params: Tensor) -> Tensor:
        """phi(C_k) for every level, in one trunk pass over all crops. -> (B, K * L)"""
        crops = [
            affine_crop(lvl, params[:, k], self.config.crop_size) for k, lvl in enumerate(levels)
        ]
        pooled = self.trunk(torch.cat(crops)).mean(dim=(2, 3))  # (K * B, L)
        return torch.cat(pooled.chunk(len(levels)), dim=1)

    def rank(self, whole: Tensor, crops: Tensor) -> Tensor:
        """s(I) = w . [phi(I), phi(C_k)..., g(I)] + b, in float32 also under autocast (as
        LENA's heads: model/network.py). (B, L), (B, K * L) -> (B,)"""
        with full_precision(whole):
            return self.ranker(self.ranker_input(whole.float(), crops.float())).squeeze(-1)

    def ranker_input(self, whole: Tensor, crops: Tensor) -> Tensor:
        """[phi(I), phi(C_k)..., g(I)], what the ranker's one linear unit weighs. -> (B, D)"""
        parts = [whole, crops.to(whole.dtype)]
        if self.categories.size:
            parts.append(self.categories(whole))
        return torch.cat(parts, dim=1)

    def score_levels(
        self, levels: list[Tensor], features: list[Tensor], jitter: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Scores and transforms from the pyramid and its trunk features. -> (B,), (B, K, 3)

        jitter (B, K, 3), training only: a window (a, u_x, u_y) each crop is composed with,
        sampling at a (s x + t) + u, i.e. a random sub-window of the level (section 3.4.3).
        """
        params = self.transforms(features)
        sampled = params
        if jitter is not None:
            a = jitter[..., :1]
            sampled = torch.cat([a * params[..., :1], a * params[..., 1:] + jitter[..., 1:]], -1)
        whole = features[0].mean(dim=(2, 3))
        return self.rank(whole, self.crop_features(levels, sampled)), params

    # -- the network as a whole -------------------------------------------------------------

    def forward(self, images: Tensor) -> Tensor:  # (B, 3, S, S) -> (B,)
        levels = self.pyramid(images)
        return self.score_levels(levels, self.level_features(levels))[0]

    def pair_logits(self, images_a: Tensor, images_b: Tensor) -> Tensor:
        """s(a) - s(b) from one forward pass over both branches. -> (B,)"""
        scores = self(torch.cat([images_a, images_b]))
        return scores[: len(images_a)] - scores[len(images_a) :]

    def explain(self, images: Tensor) -> Explanation:
        """Scores, the ranker's CAM on the whole image, and every level's transform."""
        levels = self.pyramid(images)
        features = self.level_features(levels)
        scores, params = self.score_levels(levels, features)
        f = features[0]
        with full_precision(f):
            weight = self.ranker.weight[0, : f.shape[1]]
            maps = torch.einsum("blhw,l->bhw", f.float(), weight)  # CAM of phi(I)'s share of s(I)
        return Explanation(scores, maps, params)

    def viraliency(self, images: Tensor, dense: bool = False) -> tuple[Tensor, Tensor]:
        """The same interface as ViralityNet.viraliency: scores (B,), maps (B, h, w)."""
        del dense  # the CAM is dense already: there is no selection to undo
        scores, maps, _ = self.explain(images)
        return scores, maps


def viralnet_loss(
    logits: Tensor,
    labels: Tensor,
    params: Tensor,
    weight: float,
    min_scales: Tensor | None = None,
) -> Tensor:
    """Eq. (1) as a mean over pairs + weight * the spatial penalty summed over the transforms
    of an image (both images of each pair; section 3.4.3), averaged over the images; with
    `min_scales` (K,), the shrink penalty of each level's transform too (model/stn.py).

    logits (P,), labels (P,), params (2P, K, 3)."""
    ranking = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    penalty = spatial_penalty(params.float())
    if min_scales is not None:
        penalty = penalty + shrink_penalty(params.float(), min_scales.to(params.device))
    return ranking + weight * penalty.sum(-1).mean()


def level_inits(config: ViralNetConfig) -> list[float]:
    """Each pyramid level's initial crop scale s: scale_init / 2^k."""
    return [config.scale_init / 2**k for k in range(config.scales)]


def config_for_arch(arch: str, backbone: str = "mobilenet_v2", **overrides: Any) -> ViralNetConfig:
    """The config of one of ARCHS; categories default to ImageNet's for -c / -mc."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    scales = 3 if arch.startswith("viralnet-m") else 1
    categories = "imagenet" if arch.endswith("c") else "none"
    values: dict[str, Any] = {"backbone": backbone, "scales": scales, "categories": categories}
    values.update(overrides)
    return ViralNetConfig(**values)
