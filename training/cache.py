"""Training inputs: augmented views of every image, optionally pushed through a frozen prefix.

With `freeze_blocks = k`, the first k blocks of the trunk keep their ImageNet weights, so their
output for a given view never changes: it is computed once, stored (fp16, safetensors) under
`cache/`, and training runs only the remaining blocks. On MobileNetV2 with k = 14 that is about
a third of the forward cost and a small fraction of the backward.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from model.images import DECODE_SCALE, DECODER_VERSION, normalise
from model.network import ViralityNet
from training.views import load_rgb, make_views

log = logging.getLogger(__name__)


class FromBlock(nn.Module):
    """The network from trunk block `start` on: cached prefix features -> scores."""

    def __init__(self, net: ViralityNet, start: int) -> None:
        super().__init__()
        if start and not isinstance(net.trunk, nn.Sequential):
            raise ValueError(f"freeze_blocks needs a sequential trunk; {net.config.backbone} isn't")
        self.net, self.start = net, start
        for p in self.prefix.parameters():
            p.requires_grad_(False)

    @property
    def prefix(self) -> nn.Module:
        return self.net.trunk[: self.start] if self.start else nn.Identity()  # type: ignore[index]

    def prepare(self, x: Tensor) -> Tensor:
        """Cached inputs as the trunk's block `start` takes them."""
        return normalise(x, self.net.preprocessing) if self.start == 0 else x.float()

    def feature_maps(self, x: Tensor) -> Tensor:
        """The latent concepts f_l of cached inputs. -> (B, L, h, w)"""
        if self.start == 0:  # the inputs are the uint8 views themselves
            return self.net.feature_maps(self.prepare(x))
        f = self.net.trunk[self.start :](self.prepare(x))  # type: ignore[index]
        return self.net.objectness(f) if self.net.objectness is not None else f

    def forward(self, x: Tensor) -> Tensor:
        return self.net.score_features(self.feature_maps(x))


def render_views(paths: Sequence[Path], size: int, n_views: int, seed: int) -> Tensor:
    """(V, N, size, size, 3) uint8 views of every image, reproducible for a seed."""
    out = torch.empty((n_views, len(paths), size, size, 3), dtype=torch.uint8)
    for i, path in enumerate(tqdm(paths, desc="decoding", leave=False, disable=None)):
        rng = np.random.default_rng([seed, i])
        out[:, i] = torch.from_numpy(make_views(load_rgb(path, size), size, n_views, rng).copy())
    return out


@torch.no_grad()
def run_blocks(
    net: ViralityNet, inputs: Tensor, start: int, stop: int, device: torch.device
) -> Tensor:
    """Push (V, N, ...) inputs of trunk block `start` through blocks [start, stop) in eval mode.

    Block 0 takes the uint8 views; the result is stored as fp16 (V, N, C, h, w).
    """
    if stop == start:
        return inputs
    blocks = net.trunk[start:stop].to(device).eval()  # type: ignore[index]
    flat = inputs.flatten(0, 1)
    chunks = []
    for i in tqdm(
        range(0, len(flat), 64), desc=f"frozen blocks {start}-{stop}", leave=False, disable=None
    ):
        x = flat[i : i + 64].to(device)
        x = normalise(x, net.preprocessing) if start == 0 else x.float()
        chunks.append(blocks(x).half().cpu())
    feats = torch.cat(chunks)
    return feats.view(*inputs.shape[:2], *feats.shape[1:])


def prefix_features(model: FromBlock, views: Tensor, device: torch.device) -> Tensor:
    """Push (V, N, S, S, 3) uint8 views through the frozen prefix -> (V, N, C, h, w) fp16."""
    return run_blocks(model.net, views, 0, model.start, device)


def prefix_digest(net: ViralityNet, start: int) -> str:
    """SHA-256 of the weights and buffers of trunk blocks [0, start); empty for no prefix.

    The cached features are a function of these weights: a run resumed from a fine-tuned
    checkpoint with a larger `freeze_blocks` must not reuse features of the ImageNet weights.
    """
    if start == 0:
        return ""
    return state_digest(net.trunk[:start].state_dict())  # type: ignore[index]


def state_digest(state: Mapping[str, Tensor]) -> str:
    """SHA-256 of a state_dict's names and exact bytes, whatever the dtypes and devices."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()


def _cache_file(
    cache_dir: Path, model: FromBlock, paths: Sequence[Path], start: int, n_views: int, seed: int
) -> Path:
    pre = model.net.preprocessing
    key = json.dumps(
        [
            [str(p) for p in paths],
            model.net.config.backbone,
            start,
            n_views,
            seed,
            pre.input_size,
            prefix_digest(model.net, start),
            [DECODER_VERSION, DECODE_SCALE],  # how the files were decoded
        ]
    )
    return cache_dir / f"inputs-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"


def cached_inputs(
    model: FromBlock,
    paths: Sequence[Path],
    n_views: int,
    seed: int,
    device: torch.device,
    cache_dir: Path = Path("cache"),
) -> Tensor:
    """Views (or their frozen-prefix features) for `paths`, from `cache_dir` when present.

    A deeper prefix is built from the deepest shallower one already cached, so trying several
    `freeze_blocks` decodes the images and runs the early (expensive) blocks only once.
    """
    path = _cache_file(cache_dir, model, paths, model.start, n_views, seed)
    if path.is_file():
        log.info("using cached inputs %s", path)
        return load_file(str(path))["inputs"]
    shallower = (
        (start, _cache_file(cache_dir, model, paths, start, n_views, seed))
        for start in range(model.start - 1, 0, -1)
    )
    start, base = next(((b, f) for b, f in shallower if f.is_file()), (0, None))
    if base is not None:
        log.info("building on cached inputs %s (block %d)", base, start)
        inputs = run_blocks(model.net, load_file(str(base))["inputs"], start, model.start, device)
    else:
        views = render_views(paths, model.net.preprocessing.input_size, n_views, seed)
        inputs = prefix_features(model, views, device)
    cache_dir.mkdir(parents=True, exist_ok=True)
    save_file({"inputs": inputs.contiguous()}, str(path))
    log.info("cached %s inputs of shape %s in %s", inputs.dtype, tuple(inputs.shape), path)
    return inputs
