"""Training and serving feed the network the same tensor for the same odd file.

The training side is the feature cache's path (training.cache.render_views: the plain view of
each file, then FromBlock.prepare); the serving side is what the service runs per upload
(app.images.prepare) and per batch (Engine.to_input). Both must give equal tensors.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.engine import Engine
from app.images import prepare
from model.checkpoint import CheckpointInfo
from model.network import NetworkConfig, ViralityNet
from training.cache import FromBlock, render_views

KEY = (10, 200, 30)


def photo(width: int, height: int, seed: int) -> np.ndarray:
    """Gradients plus noise: enough structure that a wrong conversion shows."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + 2 * y) % 256], axis=-1)
    return np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def odd_files() -> dict[str, bytes]:
    """The files the two decoders used to disagree on, and the modes they had to convert."""
    pixels = photo(120, 90, 1)
    pixels[20:50, 30:70] = KEY  # the tRNS colour: a block that must come out white
    rgb = Image.fromarray(pixels)
    gray16 = Image.fromarray(photo(100, 80, 2)[:, :, 0].astype(np.uint16) * 97 + 300)
    assert gray16.mode.startswith("I")
    assert np.asarray(gray16).max() < 65535 // 2  # so stretching to its maximum would show
    palette = rgb.quantize(32)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    frames = [Image.fromarray(photo(64, 48, s)).quantize(64) for s in (3, 4)]
    gray_alpha = Image.fromarray(photo(70, 50, 5)[:, :, 1]).convert("LA")
    gray_alpha.putalpha(Image.fromarray(photo(70, 50, 6)[:, :, 2]))
    return {
        "sixteen_bit.png": save(gray16, "PNG"),  # used to be stretched to its own maximum
        "rgb_trns.png": save(rgb, "PNG", transparency=KEY),
        "cmyk.jpg": save(rgb.convert("CMYK"), "JPEG", quality=90),
        "palette_trns.png": save(palette, "PNG", transparency=0),
        "exif_rotated.jpg": save(rgb, "JPEG", quality=90, exif=exif.tobytes()),
        "animated.gif": save(frames[0], "GIF", save_all=True, append_images=[frames[1]]),
        "gray_alpha.png": save(gray_alpha, "PNG"),
        "float.tiff": save(Image.fromarray(photo(60, 40, 9)[:, :, 0].astype(np.float32)), "TIFF"),
        "large.jpg": save(Image.fromarray(photo(900, 600, 7)), "JPEG", quality=90),
        "large_rotated.jpg": save(
            Image.fromarray(photo(700, 520, 8)), "JPEG", quality=90, exif=exif.tobytes()
        ),
    }


@pytest.fixture(scope="module")
def engine() -> Engine:
    torch.manual_seed(0)
    net = ViralityNet(NetworkConfig(backbone="tiny", pooling="lena"), pretrained=False).eval()
    return Engine(net, CheckpointInfo(net.config, net.preprocessing), torch.device("cpu"))


def test_training_and_serving_give_the_network_equal_tensors(
    engine: Engine, tmp_path: Path
) -> None:
    files = odd_files()
    paths = []
    for name, data in files.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    size = engine.input_size
    views = render_views(paths, size, n_views=1, seed=0)[0]  # (N, S, S, 3): the plain views
    trained_on = FromBlock(engine.net, 0).prepare(views)
    served = engine.to_input(
        np.stack([prepare(data, name, 10**8, size).pixels for name, data in files.items()])
    )
    assert trained_on.shape == served.shape == (len(files), 3, size, size)
    differ = [name for i, name in enumerate(files) if not torch.equal(trained_on[i], served[i])]
    assert differ == []
    with torch.no_grad():
        torch.testing.assert_close(engine.net(trained_on), engine.net(served), rtol=0, atol=0)


def test_the_odd_files_really_are_odd() -> None:
    """The premises: each file opens in the mode it is meant to exercise."""
    modes = {}
    for name, data in odd_files().items():
        with Image.open(io.BytesIO(data)) as image:
            modes[name] = (image.mode, "transparency" in image.info, image.format)
    assert modes["sixteen_bit.png"][0].startswith("I")
    assert modes["rgb_trns.png"] == ("RGB", True, "PNG")
    assert modes["cmyk.jpg"][0] == "CMYK"
    assert modes["palette_trns.png"] == ("P", True, "PNG")
    assert modes["animated.gif"][2] == "GIF"
    assert modes["gray_alpha.png"][0] == "LA"
    assert modes["float.tiff"][0] == "F"
