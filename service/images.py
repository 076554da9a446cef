"""Images as the API takes them: base64 of a PNG or JPEG, checked before anything keeps them.

The order of the checks is the point. The base64 text is decoded strictly, the encoded size is
checked against ``UNLEARN_MAX_IMAGE_BYTES``, then Pillow reads only the header (``Image.open``
is lazy) for the format and the dimensions, and width x height is checked against
``UNLEARN_MAX_IMAGE_PIXELS`` before a single pixel is decoded: a small file that claims a huge
canvas (a decompression bomb) is refused from its header. Only then is the file verified and
decoded once in full, so that a truncated or corrupt image is refused here, with the request,
and never fails a training job later (the engine decodes the same bytes with the same Pillow).
What is stored is the encoded bytes as sent: the engine's input, whose digest a retrain
reproduces bitwise.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass

from service.errors import InvalidImageError
from service.settings import Settings

#: The formats accepted, by Pillow's name, with the media type stored beside the bytes.
MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg"}


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(settings.max_image_bytes, settings.max_image_pixels)

    @classmethod
    def default(cls) -> ImageLimits:
        """The settings' defaults (``UNLEARN_MAX_IMAGE_BYTES``, ``UNLEARN_MAX_IMAGE_PIXELS``)."""
        fields = Settings.model_fields
        return cls(fields["max_image_bytes"].default, fields["max_image_pixels"].default)


@dataclass(frozen=True)
class CheckedImage:
    data: bytes  # the encoded image, as sent
    media_type: str  # image/png or image/jpeg
    width: int
    height: int


def decode_base64(text: str, limits: ImageLimits, *, name: str = "image") -> bytes:
    """The bytes of a base64 text (standard alphabet, padding optional, whitespace refused),
    refused before decoding when they would exceed the size limit."""
    if not isinstance(text, str) or not text:
        raise InvalidImageError(f"`{name}` must be a non-empty base64 string")
    if len(text) * 3 // 4 > limits.max_bytes + 2:  # an upper bound: refuse before decoding
        raise _too_large(name, limits, None)
    padded = text + "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidImageError(f"`{name}` is not valid base64: {error}") from error
    if len(data) > limits.max_bytes:
        raise _too_large(name, limits, len(data))
    return data


def _too_large(name: str, limits: ImageLimits, size: int | None) -> InvalidImageError:
    got = f" ({size:,} bytes)" if size is not None else ""
    return InvalidImageError(
        f"`{name}` is larger than UNLEARN_MAX_IMAGE_BYTES ({limits.max_bytes:,} bytes){got}"
    )


def check_image(data: bytes, limits: ImageLimits, *, name: str = "image") -> CheckedImage:
    """``data`` if it is a PNG or JPEG within the limits (header first, then one full decode);
    an :class:`InvalidImageError` that names the failed check or limit otherwise."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > limits.max_bytes:
        raise _too_large(name, limits, len(data))
    with warnings.catch_warnings():
        # Pillow warns above its own bound and raises above twice it; ours is checked below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=list(MEDIA_TYPES)) as image:
                width, height = image.size
                kind = image.format
        except Image.DecompressionBombError as error:
            raise _too_many_pixels(name, limits, None) from error
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise InvalidImageError(f"`{name}` is not a PNG or JPEG image") from error
        if kind not in MEDIA_TYPES:  # pragma: no cover - `formats=` admits no other
            raise InvalidImageError(f"`{name}` is a {kind} image; send a PNG or JPEG")
        if width < 1 or height < 1:
            raise InvalidImageError(f"`{name}` has no pixels ({width}x{height})")
        if width * height > limits.max_pixels:
            raise _too_many_pixels(name, limits, (width, height))
        try:
            with Image.open(io.BytesIO(data), formats=[kind]) as image:
                image.verify()  # the file's own checks (PNG chunk CRCs), no decode
            with Image.open(io.BytesIO(data), formats=[kind]) as image:
                image.load()  # one full decode: a truncated image is refused now
        except Image.DecompressionBombError as error:
            raise _too_many_pixels(name, limits, (width, height)) from error
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise InvalidImageError(f"`{name}` is a damaged {kind} image: {error}") from error
    return CheckedImage(data, MEDIA_TYPES[kind], width, height)


def _too_many_pixels(
    name: str, limits: ImageLimits, size: tuple[int, int] | None
) -> InvalidImageError:
    got = f" ({size[0]}x{size[1]} = {size[0] * size[1]:,})" if size is not None else ""
    return InvalidImageError(
        f"`{name}` has more pixels than UNLEARN_MAX_IMAGE_PIXELS ({limits.max_pixels:,}){got}"
    )


def image_from_base64(text: str, limits: ImageLimits, *, name: str = "image") -> CheckedImage:
    """A base64 PNG or JPEG from a request, checked (see the module's docstring)."""
    return check_image(decode_base64(text, limits, name=name), limits, name=name)
