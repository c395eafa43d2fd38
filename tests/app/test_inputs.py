"""Every kind of upload: the six formats, odd modes, EXIF, and every way a file can be bad."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from app.images import ACCEPTED

from .helpers import Serve, on_both_archs
from .imaging import encode, jpeg, jpeg_declaring_size, multipart, photo, png_declaring_size


async def score(client: httpx.AsyncClient, data: bytes) -> dict[str, Any]:
    response = await client.post("/score", files=multipart(data))
    assert response.status_code == 200, response.text
    (entry,) = response.json()["results"]
    return entry


async def refusal(client: httpx.AsyncClient, *images: bytes) -> tuple[int, dict[str, Any]]:
    response = await client.post("/score", files=multipart(*images))
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    return response.status_code, body["error"]


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("JPEG", {"quality": 90}),
        ("PNG", {}),
        ("WEBP", {"lossless": True}),
        ("BMP", {}),
        ("TIFF", {}),
        ("GIF", {}),
    ],
)
async def test_each_accepted_format_is_scored(
    client: httpx.AsyncClient, fmt: str, options: dict[str, object]
) -> None:
    entry = await score(client, encode(photo(90, 60, seed=4), fmt, **options))
    assert (entry["width"], entry["height"]) == (90, 60)


@on_both_archs
async def test_lossless_formats_of_the_same_pixels_score_the_same(
    client: httpx.AsyncClient,
) -> None:
    pixels = photo(90, 60, seed=5)
    scores = [
        (await score(client, encode(pixels, fmt, **opts)))["score"]
        for fmt, opts in [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True})]
    ]
    assert scores == pytest.approx([scores[0]] * 4, abs=1e-6)


async def test_only_the_first_gif_frame_counts(client: httpx.AsyncClient) -> None:
    frames = [Image.fromarray(photo(64, 48, seed=s)).quantize(64) for s in (6, 7)]
    animated = encode(frames[0], "GIF", save_all=True, append_images=[frames[1]], duration=100)
    first_only = encode(frames[0], "GIF")
    assert (await score(client, animated))["score"] == pytest.approx(
        (await score(client, first_only))["score"], abs=1e-6
    )


async def test_exif_orientation_rotates_the_image(client: httpx.AsyncClient) -> None:
    pixels = photo(96, 64, seed=8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    rotated_tag = encode(pixels, "JPEG", quality=95, exif=exif.tobytes())
    entry = await score(client, rotated_tag)
    assert (entry["width"], entry["height"]) == (64, 96)
    plain = await score(client, encode(pixels, "JPEG", quality=95))
    assert (plain["width"], plain["height"]) == (96, 64)
    heatmap = await client.get(entry["heatmap_url"])
    with Image.open(io.BytesIO(heatmap.content)) as image:
        assert image.size == (64, 96)


async def test_sixteen_bit_png_scores_as_its_eight_bit_equivalent(
    client: httpx.AsyncClient,
) -> None:
    gray8 = photo(80, 60, seed=9)[:, :, 0]
    gray16 = Image.fromarray(gray8.astype(np.uint16) * 257)  # 0..65535
    assert gray16.mode.startswith("I")
    sixteen = await score(client, encode(gray16, "PNG"))
    eight = await score(client, encode(Image.fromarray(gray8, "L"), "PNG"))
    assert sixteen["score"] == pytest.approx(eight["score"], abs=1e-6)


async def test_grayscale_scores_as_gray_rgb(client: httpx.AsyncClient) -> None:
    gray = photo(80, 60, seed=10)[:, :, 1]
    as_l = await score(client, encode(Image.fromarray(gray, "L"), "PNG"))
    as_rgb = await score(client, encode(np.repeat(gray[:, :, None], 3, axis=2), "PNG"))
    assert as_l["score"] == pytest.approx(as_rgb["score"], abs=1e-6)


async def test_palette_scores_as_its_colours(client: httpx.AsyncClient) -> None:
    palette = Image.fromarray(photo(80, 60, seed=11)).quantize(32)
    assert palette.mode == "P"
    as_p = await score(client, encode(palette, "PNG"))
    as_rgb = await score(client, encode(palette.convert("RGB"), "PNG"))
    assert as_p["score"] == pytest.approx(as_rgb["score"], abs=1e-6)


async def test_palette_with_transparency_is_composited_over_white(
    client: httpx.AsyncClient,
) -> None:
    palette = Image.fromarray(photo(80, 60, seed=16)).quantize(32)
    palette.info["transparency"] = 0  # palette index 0 is see-through
    data = encode(palette, "PNG", transparency=0)
    with Image.open(io.BytesIO(data)) as reread:
        assert reread.mode == "P"
        assert "transparency" in reread.info
        rgba = reread.convert("RGBA")
    assert 0 < int((np.asarray(rgba)[:, :, 3] == 0).sum()) < 80 * 60
    over_white = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    over_black = Image.alpha_composite(Image.new("RGBA", rgba.size, "black"), rgba).convert("RGB")
    scored = (await score(client, data))["score"]
    assert scored == pytest.approx(
        (await score(client, encode(over_white, "PNG")))["score"], abs=1e-6
    )
    assert scored != pytest.approx(
        (await score(client, encode(over_black, "PNG")))["score"], abs=1e-6
    )


async def test_alpha_is_composited_over_white(client: httpx.AsyncClient) -> None:
    opaque = photo(80, 60, seed=12)
    rgba = np.dstack([opaque, np.full(opaque.shape[:2], 255, np.uint8)])
    assert (await score(client, encode(rgba, "PNG")))["score"] == pytest.approx(
        (await score(client, encode(opaque, "PNG")))["score"], abs=1e-6
    )
    transparent = np.zeros((60, 80, 4), np.uint8)
    white = np.full((60, 80, 3), 255, np.uint8)
    assert (await score(client, encode(transparent, "PNG")))["score"] == pytest.approx(
        (await score(client, encode(white, "PNG")))["score"], abs=1e-6
    )
    gray_alpha = Image.fromarray(opaque[:, :, 0]).convert("LA")
    await score(client, encode(gray_alpha, "PNG"))


async def test_cmyk_jpeg_is_scored(client: httpx.AsyncClient) -> None:
    cmyk = Image.fromarray(photo(80, 60, seed=13)).convert("CMYK")
    await score(client, encode(cmyk, "JPEG"))


async def test_an_empty_file_is_refused(client: httpx.AsyncClient) -> None:
    status, error = await refusal(client, b"")
    assert (status, error["code"]) == (400, "empty_file")
    assert error["accepted"] == ACCEPTED


@pytest.mark.parametrize(
    "data",
    [b"just some text, not an image\n", b"%PDF-1.4\n" + bytes(200), b"\x00" * 64],
    ids=["text", "pdf", "zeros"],
)
async def test_a_file_that_is_not_an_image_is_refused(
    client: httpx.AsyncClient, data: bytes
) -> None:
    status, error = await refusal(client, data)
    assert (status, error["code"]) == (415, "unsupported_format")
    assert "img0.bin" in error["message"]
    assert error["accepted"] == ACCEPTED


async def test_an_image_format_we_do_not_accept_is_refused(client: httpx.AsyncClient) -> None:
    status, error = await refusal(client, encode(photo(32, 32), "PPM"))
    assert (status, error["code"]) == (415, "unsupported_format")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
async def test_a_truncated_image_is_refused(client: httpx.AsyncClient, fmt: str) -> None:
    data = encode(photo(200, 150, seed=14), fmt)
    status, error = await refusal(client, data[: len(data) // 2])
    assert (status, error["code"]) == (400, "corrupt_image")
    assert "truncated" in error["message"]


async def test_a_corrupt_image_is_refused(client: httpx.AsyncClient) -> None:
    data = bytearray(encode(photo(64, 64, seed=15), "PNG"))
    data[60:200] = bytes(140)  # zero the compressed pixel data, keep the header
    status, error = await refusal(client, bytes(data))
    assert (status, error["code"]) == (400, "corrupt_image")


@on_both_archs
async def test_a_bad_image_among_good_ones_names_its_position(client: httpx.AsyncClient) -> None:
    status, error = await refusal(client, jpeg(seed=1), b"not an image", jpeg(seed=2))
    assert status == 415
    assert error["message"].startswith("images[1] ('img1.bin')")


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (8_000, 8_000)])
async def test_a_bomb_header_is_refused_before_decoding(
    serve: Serve, width: int, height: int
) -> None:
    async with serve(max_pixels=20_000_000) as (_, client):
        status, error = await refusal(client, png_declaring_size(width, height))
    assert (status, error["code"]) == (413, "too_many_pixels")


@pytest.mark.parametrize(("width", "height"), [(65_000, 65_000), (8_000, 8_000)])
async def test_a_jpeg_bomb_header_is_refused_before_decoding(
    serve: Serve, width: int, height: int
) -> None:
    async with serve(max_pixels=20_000_000) as (_, client):
        status, error = await refusal(client, jpeg_declaring_size(width, height))
    assert (status, error["code"]) == (413, "too_many_pixels")


@on_both_archs
async def test_max_pixels_is_a_setting(serve: Serve) -> None:
    async with serve(max_pixels=90 * 60 - 1) as (_, client):
        status, error = await refusal(client, jpeg(90, 60))
        assert (status, error["code"]) == (413, "too_many_pixels")
        assert "5400" in error["message"]
        await score(client, jpeg(89, 60))


@on_both_archs
async def test_an_oversize_upload_is_refused(serve: Serve) -> None:
    small, large = jpeg(32, 32), jpeg(400, 300, seed=3)
    async with serve(max_upload_bytes=len(small) + 10, max_images_per_request=4) as (_, client):
        await score(client, small)
        status, error = await refusal(client, large)
        assert (status, error["code"]) == (413, "file_too_large")
        status, error = await refusal(client, large * 8)
        assert (status, error["code"]) == (413, "request_too_large")


@on_both_archs
async def test_too_many_images_are_refused(serve: Serve) -> None:
    async with serve(max_images_per_request=2) as (_, client):
        status, error = await refusal(client, *(jpeg(seed=s) for s in range(3)))
    assert (status, error["code"]) == (413, "too_many_images")


async def test_a_missing_field_is_a_422_in_the_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/score", files={"wrong_field": ("a.jpg", jpeg())})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert "images" in response.json()["error"]["message"]
    response = await client.post("/compare", files={"image_a": ("a.jpg", jpeg())})
    assert response.status_code == 422
    assert "image_b" in response.json()["error"]["message"]


async def test_an_upload_over_a_mebibyte_never_touches_the_disk(
    client: httpx.AsyncClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starlette spools a file over 1 MiB to a temporary file unless told not to (app.uploads):
    with no temporary directory to write to, such an upload is still scored."""
    noise = np.random.default_rng(0).integers(0, 256, (600, 700, 3), dtype=np.uint8)
    large = encode(noise, "BMP")
    assert len(large) > 1024 * 1024
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "does-not-exist"))
    entry = await score(client, large)
    assert (entry["width"], entry["height"]) == (700, 600)
