"""Audio lines: speech a live-session client streams as PCM instead of sending text to be
spoken. The types and limits the relay (orchestrator) and the live-audio worker share.

    client --WS: {"type": "audio.start"}, binary PCM, ..., {"type": "audio.end"}--> relay
    relay --XADD ctl: type=audio.start (its entry id orders the line among says and stops)
          --XADD audio_in: kind=pcm|end, each naming the line and its audio.start's ctl id
    live-audio: resamples to the stream's rate and forwards each piece as it arrives
          --XADD speech: kind=audio (22.05 kHz mono, no phonemes)--> live-visual

A line's audio is heard as sent (resampled, never re-synthesized); the mouth follows its
loudness and spectrum, and the face shows the emotion its audio.start names. A `stop` cuts an
audio line as it cuts a text line.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from shared.keys import text
from shared.persona import Feeling

STREAM_RATE = 22050  # the live stream's audio rate (Piper's): audio lines are resampled to it
MIN_RATE, MAX_RATE = 8000, 48000
FORMATS = ("s16le",)
CHANNELS = (1, 2)
MAX_MESSAGE_BYTES = 256 * 1024  # one binary message: 1.4 s of 48 kHz stereo, 8 s of 16 kHz mono
LEAD_S = 60.0  # audio may arrive this far ahead of real time (a TTS burst); past it, dropped
IDLE_END_S = 10.0  # an open line that gets no audio for this long is ended by the relay
AUDIO_IN_MAXLEN = 4000  # entries kept in a session's audio_in stream (live-audio trims it)


class AudioStart(BaseModel):
    """An audio line as the relay accepted it (the ctl entry `type=audio.start`)."""

    model_config = ConfigDict(frozen=True)

    id: str
    rate: int
    channels: int = 1
    text: str = ""  # the transcript, for captions; may be empty
    emotion: str = "neutral"  # the face it is shown with (the voice is left as sent)
    intensity: float = 0.0

    @property
    def feeling(self) -> Feeling:
        return Feeling.of(self.emotion, self.intensity)

    def fields(self) -> dict[Any, Any]:  # redis-py types its mapping keys invariantly
        return {"type": "audio.start", "id": self.id, "rate": self.rate,
                "channels": self.channels, "text": self.text, **self.feeling.fields()}

    @classmethod
    def from_fields(cls, raw: dict[Any, Any]) -> AudioStart:
        """From a stream entry's fields (str or bytes keys and values); KeyError or ValueError
        if it is not one."""
        fields = {text(k): v for k, v in raw.items()}
        feeling = Feeling.from_fields(fields)
        return cls(id=text(fields["id"]), rate=int(text(fields["rate"])),
                   channels=int(text(fields.get("channels", b"1"))),
                   text=text(fields.get("text", b"")), emotion=feeling.emotion,
                   intensity=feeling.intensity)


class AudioIn(BaseModel):
    """One entry of a session's audio_in stream: a piece of a line's PCM (s16le, interleaved
    when stereo, as the client sent it), or the line's end. Each names its line fully, so a
    live-audio worker that takes the session over can carry on a line it did not see start."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["pcm", "end"]
    line: str
    ctl: str  # the stream id of the line's audio.start entry on the ctl stream
    rate: int
    channels: int = 1
    pcm: bytes = b""

    def fields(self) -> dict[Any, Any]:  # redis-py types its mapping keys invariantly
        return {"kind": self.kind, "line": self.line, "ctl": self.ctl, "rate": self.rate,
                "channels": self.channels, "pcm": self.pcm}

    @classmethod
    def from_fields(cls, raw: dict[Any, Any]) -> AudioIn:
        """From a stream entry's fields (str or bytes keys and values); KeyError or ValueError
        if it is not one."""
        fields = {text(k): v for k, v in raw.items()}
        kind = text(fields.get("kind", b""))
        return cls(kind="end" if kind == "end" else "pcm", line=text(fields["line"]),
                   ctl=text(fields["ctl"]), rate=int(text(fields["rate"])),
                   channels=int(text(fields.get("channels", b"1"))),
                   pcm=bytes(fields.get("pcm", b"")))


def describe_channels(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"
