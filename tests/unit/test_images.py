"""Images as the API takes them (``service.images``): base64 of a PNG or JPEG within the size
and pixel limits, the pixels read from the header before anything is decoded (a decompression
bomb is refused from a few hundred bytes), a damaged file refused before it is stored."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from PIL import Image, ImageFile

from service.errors import InvalidImageError
from service.images import ImageLimits, check_image, image_from_base64
from service.settings import Settings

LIMITS = ImageLimits(max_bytes=5 * 1024 * 1024, max_pixels=16_777_216)


def encoded(kind: str, size: tuple[int, int] = (12, 9)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format=kind)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few hundred bytes whose header claims ``width`` x ``height``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 1000)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("kind", "media_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_png_and_jpeg_are_accepted_as_sent(kind: str, media_type: str) -> None:
    data = encoded(kind)
    checked = image_from_base64(base64.b64encode(data).decode(), LIMITS)
    assert (checked.data, checked.media_type, checked.width, checked.height) == (
        data,
        media_type,
        12,
        9,
    )
    unpadded = base64.b64encode(data).decode().rstrip("=")
    assert image_from_base64(unpadded, LIMITS).data == data


@pytest.mark.parametrize("kind", ["GIF", "BMP", "WEBP", "TIFF"])
def test_other_formats_are_refused(kind: str) -> None:
    with pytest.raises(InvalidImageError, match="not a PNG or JPEG"):
        check_image(encoded(kind), LIMITS)


@pytest.mark.parametrize("text", ["", "not base64!", "aGVsbG8=\n", "a" * 5])
def test_bad_base64_is_refused(text: str) -> None:
    with pytest.raises(InvalidImageError, match="`image`"):
        image_from_base64(text, LIMITS)


def test_a_damaged_image_is_refused_before_it_is_stored() -> None:
    data = encoded("PNG", (64, 64))
    with pytest.raises(InvalidImageError, match=r"damaged PNG|not a PNG"):
        check_image(data[: len(data) - 30], LIMITS)
    flipped = bytearray(data)
    flipped[40] ^= 0xFF  # inside a chunk: its CRC no longer matches
    with pytest.raises(InvalidImageError):
        check_image(bytes(flipped), LIMITS)


def test_the_size_limit_is_named_and_checked_before_decoding_base64() -> None:
    data = encoded("PNG", (64, 64))
    small = ImageLimits(max_bytes=len(data) - 1, max_pixels=LIMITS.max_pixels)
    with pytest.raises(InvalidImageError, match="UNLEARN_MAX_IMAGE_BYTES") as refused:
        check_image(data, small)
    assert f"({len(data):,} bytes)" in refused.value.detail
    huge = "A" * (8 * LIMITS.max_bytes)  # refused from its length alone
    with pytest.raises(InvalidImageError, match="UNLEARN_MAX_IMAGE_BYTES"):
        image_from_base64(huge, LIMITS)


def test_a_decompression_bomb_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[object] = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self))
    bomb = png_claiming(5000, 5000)
    assert len(bomb) < 500
    with pytest.raises(InvalidImageError, match=r"UNLEARN_MAX_IMAGE_PIXELS .*5000x5000"):
        check_image(bomb, LIMITS)
    with pytest.raises(InvalidImageError, match="UNLEARN_MAX_IMAGE_PIXELS"):
        check_image(png_claiming(100_000, 100_000), LIMITS)  # beyond Pillow's own bound too
    assert decoded == [], "nothing was decoded"
    exact = ImageLimits(LIMITS.max_bytes, max_pixels=12 * 9)
    assert check_image(encoded("PNG"), exact).width == 12
    with pytest.raises(InvalidImageError, match="12x9"):
        check_image(encoded("PNG"), ImageLimits(LIMITS.max_bytes, max_pixels=12 * 9 - 1))


def test_the_defaults_are_the_settings() -> None:
    settings = Settings()
    assert ImageLimits.default() == ImageLimits.from_settings(settings) == LIMITS
