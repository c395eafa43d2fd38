"""The frozen category network of ViralNet-C / -MC (section 3.2, "category supplement").

    g(I) = act(W phi(I) + c)        phi(I) = GAP(trunk(I)), (B, L) -> (B, K)

W, c are buffers, never trained with the ranker (the paper trains the category model
beforehand and keeps it fixed). Two sources:

- "imagenet": the backbone's own ImageNet classifier, act = softmax (the class scores used
  where a dataset has no category labels, e.g. Reddit);
- "probe": a linear probe trained beforehand on the data's category labels (on DANKMEMES:
  Meme, Manipulation, people shown), act = sigmoid; its weights are filled by `set_probe`
  and travel in the checkpoint like every other tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from model.backbones import Backbone

SOURCES = ("none", "imagenet", "probe")
IMAGENET_CLASSES = 1000


class CategoryHead(nn.Module):
    class_weight: Tensor  # (K, L)
    class_bias: Tensor  # (K,)

    def __init__(self, weight: Tensor, bias: Tensor, activation: str) -> None:
        super().__init__()
        self.register_buffer("class_weight", weight.detach().clone())
        self.register_buffer("class_bias", bias.detach().clone())
        self.activation = activation

    @property
    def size(self) -> int:
        return int(self.class_weight.shape[0])

    @classmethod
    def build(
        cls, source: str, category_names: Sequence[str], backbone_name: str, backbone: Backbone
    ) -> CategoryHead:
        """The frozen category features of ViralNet-C: `source` is one of SOURCES."""
        channels = backbone.channels
        if source == "none":
            return cls(torch.zeros(0, channels), torch.zeros(0), "sigmoid")
        if source == "imagenet":
            if backbone.classifier is None:
                raise ValueError(
                    f"backbone {backbone_name!r} has no ImageNet classifier: use "
                    "categories='probe' with category labels, or another backbone"
                )
            return cls(backbone.classifier.weight, backbone.classifier.bias, "softmax")
        if source == "probe":
            if not category_names:
                raise ValueError("categories='probe' needs category_names (the label columns)")
            k = len(category_names)
            return cls(torch.zeros(k, channels), torch.zeros(k), "sigmoid")
        raise ValueError(f"unknown categories {source!r}; choose one of {SOURCES}")

    def set_probe(self, weight: Tensor, bias: Tensor) -> None:
        """Install a trained probe (K, L), (K,); it stays frozen from then on."""
        with torch.no_grad():
            self.class_weight.copy_(weight)
            self.class_bias.copy_(bias)

    def forward(self, pooled: Tensor) -> Tensor:  # (B, L) -> (B, K)
        logits = pooled @ self.class_weight.to(pooled.dtype).T + self.class_bias.to(pooled.dtype)
        if self.activation == "softmax":
            return torch.softmax(logits.float(), dim=1).to(pooled.dtype)
        return torch.sigmoid(logits)
