"""Decoding uploaded pictures (portraits, background images) with bounded memory.

A small file can declare a huge picture (an all-zero 8192x8192 PNG is ~200 KB and 268 MB
decoded), so nothing is decoded before its header is read: the format, the sides and the pixel
count (MAX_IMAGE_PIXELS) are checked first. JPEGs are decoded reduced by the codec itself (draft
mode) when they are much larger than needed; every picture is then reduced to at most
MAX_ANALYSIS_PIXELS before anything else touches it. Decodes wait their turn for a share of one
memory budget (DECODE_BUDGET_MB) without holding a thread, and freed memory goes back to the
system afterwards (large blocks are mmapped, the heap is trimmed).

Pictures come out as 8-bit RGB: EXIF orientation applied, 16-bit grey scaled (not clipped) to
8 bits, transparency laid on a light grey fill. `Picture.notes` says what was changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import logging
import math
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
from PIL import Image, UnidentifiedImageError

from orchestrator.settings import OrchestratorSettings
from shared.errors import InvalidInput, TooLarge, Unsupported

logger = logging.getLogger(__name__)

T = TypeVar("T")
IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "BMP"}
FILL = (200, 200, 200)  # what transparent parts of a picture become
UPLOAD_THREADS = 4  # threads upload work (decoding, staging writes, ffmpeg checks) may hold
_REDUCIBLE = ("1", "L", "RGB", "RGBA", "LA", "I", "F")  # modes Image.reduce takes
_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90}


@dataclass(frozen=True)
class Picture:
    """A picture stored as 8-bit RGB PNG: its size and what was changed on the way."""
    width: int
    height: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Header:
    """What the file declares, read without decoding its pixels."""
    format: str
    width: int
    height: int
    decode_bytes: int  # memory the decode and its reduced copies will hold


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def return_memory() -> None:
    """Hand freed heap pages back to the system (glibc keeps them otherwise)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _map_large_blocks() -> None:
    """Let glibc serve blocks of 4 MB and more (Pillow's image blocks) with mmap, so that
    freeing them returns them at once, instead of raising its threshold to their size."""
    if _LIBC is not None and hasattr(_LIBC, "mallopt"):
        _LIBC.mallopt(_M_MMAP_THRESHOLD, 4 * 1024 * 1024)


def _megapixels(n: int) -> str:
    return f"{n / 1e6:.1f} megapixels"


def _accepted(what: str) -> str:
    return "a PNG, JPEG, WebP or BMP " + ("photo" if what == "portrait" else "image")


def read_header(data: bytes, s: OrchestratorSettings, what: str) -> Header:
    """Format, sides and pixel count from the header; InvalidInput (or one of its kinds) for
    anything not worth decoding."""
    why = " (a face needs pixels to animate)" if what == "portrait" else ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
            fmt = probe.format or "unknown"
            if fmt not in IMAGE_FORMATS:
                raise Unsupported(f"the {what} is a {fmt} image; send {_accepted(what)}",
                                  code="unsupported_image")
            w, h = probe.size
            _check_size(w, h, s, what, why)
            if getattr(probe, "n_frames", 1) > 1:
                raise InvalidInput(
                    f"the {what} is animated; send a still picture ({_accepted(what)})",
                    code="animated_image")
            probe.verify()
            mode = probe.mode
    except InvalidInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels(None, s, what) from exc
    except UnidentifiedImageError as exc:
        raise Unsupported(f"the {what} could not be read as an image ({exc.__class__.__name__}); "
                          f"send {_accepted(what)}", code="not_an_image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"the {what} file is damaged or truncated; send {_accepted(what)}",
                           code="corrupt_image") from exc
    keep = s.max_analysis_pixels
    dw, dh = _draft_size(fmt, w, h, keep)
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    if dw * dh > keep and mode not in _REDUCIBLE:
        per_pixel += 4  # converted at full size before it is reduced
    return Header(fmt, w, h, dw * dh * per_pixel + 2 * min(dw * dh, keep) * 4)


def _check_size(w: int, h: int, s: OrchestratorSettings, what: str, why: str) -> None:
    if w * h > s.max_image_pixels:
        raise _too_many_pixels((w, h), s, what)
    if max(w, h) > s.max_image_side:
        raise TooLarge(f"the {what} is {w}x{h} pixels; the largest side may be "
                       f"{s.max_image_side} pixels", code="image_too_large")
    if min(w, h) < s.min_image_side:
        raise InvalidInput(f"the {what} is {w}x{h} pixels; it must be at least "
                           f"{s.min_image_side}x{s.min_image_side}{why}", code="image_too_small")


def _too_many_pixels(size: tuple[int, int] | None, s: OrchestratorSettings,
                     what: str) -> TooLarge:
    told = f" is {size[0]}x{size[1]} pixels ({_megapixels(size[0] * size[1])}) and" if size else ""
    return TooLarge(f"the {what}{told} has too many pixels to decode safely; send at most "
                    f"{_megapixels(s.max_image_pixels)}, at most {s.max_image_side} pixels a side",
                    code="image_too_large")


def _draft_size(fmt: str, w: int, h: int, keep: int) -> tuple[int, int]:
    """The size the decoder will produce: JPEGs much larger than `keep` pixels are decoded at
    1/2, 1/4 or 1/8 scale, never below a quarter of `keep`."""
    if fmt != "JPEG" or w * h <= keep:
        return w, h
    scale = 1
    while scale < 8 and (w // (scale * 2)) * (h // (scale * 2)) >= keep // 4:
        scale *= 2
    return math.ceil(w / scale), math.ceil(h / scale)


def store(data: bytes, header: Header, s: OrchestratorSettings, what: str, out: Path
          ) -> Picture:
    """Decode a picture whose header passed `read_header` into upright 8-bit RGB of at most
    MAX_ANALYSIS_PIXELS and write it to `out` as PNG. Runs in a thread, inside the budget; no
    pixels outlive it."""
    notes: list[str] = []
    keep = s.max_analysis_pixels
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
        orientation = image.getexif().get(0x0112)
        if header.format == "JPEG" and header.width * header.height > keep:
            image.draft("RGB", _draft_size("JPEG", header.width, header.height, keep))
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidInput(f"the {what} file is damaged or truncated; send {_accepted(what)}",
                           code="corrupt_image") from exc
    image = _reduce(image, keep)  # the only reference: the full-size pixels go here
    if (image.width, image.height) != (header.width, header.height):
        notes.append(f"the {what} ({header.width}x{header.height}) was reduced to "
                     f"{image.width}x{image.height} (at most {_megapixels(keep)} are kept)")
    if image.mode.startswith("I"):  # 16-bit grey: scale 0-65535 to 0-255 rather than clip
        image = image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        image = image.convert("RGBA")
        lowest = image.getchannel("A").getextrema()[0]
        if isinstance(lowest, (int, float)) and lowest < 255:
            flat = Image.new("RGB", image.size, FILL)
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
            notes.append(f"the {what}'s transparent parts were filled with light grey")
    image = image.convert("RGB")
    if orientation in _ORIENTATION:
        image = image.transpose(_ORIENTATION[orientation])
    image.save(out, format="PNG")
    return Picture(image.width, image.height, tuple(notes))


def _reduce(image: Image.Image, keep: int) -> Image.Image:
    """At most `keep` pixels: an integer box reduction first (it allocates only its result),
    then Lanczos for the rest of the way."""
    if image.width * image.height <= keep:
        return image
    if image.mode not in _REDUCIBLE:  # P, CMYK, I;16...
        image = image.convert("RGBA" if "transparency" in image.info or image.mode == "PA"
                              else "I" if image.mode.startswith("I") else "RGB")
    scale = math.sqrt(keep / (image.width * image.height))
    factor = int(1 / scale)
    if factor >= 2:
        image = image.reduce(factor)
    if image.width * image.height > keep:
        size = (max(1, int(image.width * scale * factor)), max(1, int(image.height * scale
                                                                        * factor)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


class DecodeBudget:
    """Bytes of decoded pictures held at once. A decode waits on the event loop (no thread)
    until its share is free; one larger than the whole budget runs alone."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._waiters: list[anyio.Event] = []

    @asynccontextmanager
    async def hold(self, nbytes: int) -> AsyncIterator[None]:
        need = min(nbytes, self.total)
        while self.used + need > self.total:
            event = anyio.Event()
            self._waiters.append(event)
            try:
                await event.wait()
            finally:
                if event in self._waiters:
                    self._waiters.remove(event)
        self.used += need
        try:
            yield
        finally:
            self.used -= need
            waiters, self._waiters = self._waiters, []
            for event in waiters:
                event.set()


class ImageDecoder:
    """Decodes uploads inside the budget; its `threads` limiter bounds all upload work, so
    uploads never take the threads that the other routes run in."""

    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings
        self.budget = DecodeBudget(settings.decode_budget_mb * 1024 * 1024)
        self.threads = anyio.CapacityLimiter(UPLOAD_THREADS)
        # read_header checks the pixel count (naming the size) before anything is decoded;
        # Pillow's own check would refuse at open, without the size
        Image.MAX_IMAGE_PIXELS = None
        _map_large_blocks()

    async def run(self, func: Callable[..., T], *args: object) -> T:
        """`func(*args)` in one of the upload threads."""
        return await anyio.to_thread.run_sync(func, *args, limiter=self.threads)

    async def store(self, data: bytes, what: str, out: Path) -> Picture:
        """Check, decode and write the picture `data` to `out` as PNG, inside the budget."""
        s = self.settings
        header = await self.run(read_header, data, s, what)
        async with self.budget.hold(header.decode_bytes):
            try:
                return await self.run(store, data, header, s, what, out)
            finally:
                await self.run(return_memory)

