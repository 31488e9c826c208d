"""The picture of a composed job: a new background behind the person, captions burned on top.

The visual stage's `mask.mkv` (grey, 255 = person, feathered edges) becomes the alpha of the
rendered video (alphamerge), which is laid over a solid colour or over an uploaded image scaled
to cover the frame and cropped (scaled once, then its one frame repeated). Burned captions are an
ASS script in the frame's own pixels, drawn by libass. All of it is one ffmpeg filter graph whose
output `[vout]` the final encode takes as H.264 yuv420p.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_GRAPH_SPECIAL = "\\'[],;"


@dataclass(frozen=True)
class Layers:
    """What goes into the picture; None everywhere means the video is copied untouched."""

    width: int
    height: int
    fps: int
    mask: Path | None = None  # required with a background
    colour: str | None = None  # "#rrggbb"
    image: Path | None = None
    subtitles: Path | None = None  # an ASS script to burn in

    @property
    def background(self) -> bool:
        return self.colour is not None or self.image is not None

    @property
    def reencode(self) -> bool:
        return self.background or self.subtitles is not None


def filter_value(text: str) -> str:
    """`text` as one filter option value inside a filter graph (a file path with any of
    ' : , ; [ ] \\ in it): quoted for the option parser, then escaped for the graph parser."""
    quoted = "'" + text.replace("'", "'\\''") + "'"
    return "".join("\\" + ch if ch in _GRAPH_SPECIAL else ch for ch in quoted)


def video_graph(layers: Layers, video: int, mask: int | None, image: int | None) -> str:
    """The filter graph from the numbered inputs to `[vout]`."""
    w, h, fps = layers.width, layers.height, layers.fps
    parts: list[str] = []
    top = f"{video}:v"
    if layers.background:
        if mask is None:
            raise ValueError("a background needs the person mask as an input")
        if image is not None:
            parts.append(
                f"[{image}:v]scale={w}:{h}:force_original_aspect_ratio=increase:flags=lanczos,"
                f"crop={w}:{h},setsar=1,format=yuv420p,loop=loop=-1:size=1,"
                f"setpts=N/({fps}*TB)[bg]")
        else:
            colour = str(layers.colour)
            if not COLOUR.match(colour):
                raise ValueError(f"colour {colour!r}; expected #rrggbb")
            parts.append(f"color=c=0x{colour[1:]}:s={w}x{h}:r={fps},format=yuv420p[bg]")
        parts += [
            f"[{video}:v]format=yuva420p[person]",
            f"[{mask}:v]format=gray[alpha]",
            "[person][alpha]alphamerge[cutout]",
            "[bg][cutout]overlay=shortest=1:format=yuv420[comp]",
        ]
        top = "comp"
    if layers.subtitles is not None:
        parts.append(f"[{top}]ass=filename={filter_value(str(layers.subtitles))}[burned]")
        top = "burned"
    parts.append(f"[{top}]format=yuv420p[vout]")
    return ";".join(parts)
