"""The sound of a job with music: voice + a looped music bed ducked under it, at -16 LUFS.

The bed is set `music_volume` dB under the voice's loudness (both measured, EBU R128), looped
and cut to the speech, and pushed down further while the voice speaks by a sidechain compressor
keyed on the voice. The mix is then brought to -16 LUFS integrated with a true peak near
-1.5 dBTP: gain, then a fast limiter. Synthetic speech is peaky (Piper: about -18 LUFS with
0 dBFS peaks), so the limiter eats part of every dB of gain; the gain is found by measuring the
finished chain and correcting it (secant steps, usually two or three passes of the audio alone).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.errors import StageFailed
from shared.ffmpeg import ffmpeg_report

logger = logging.getLogger(__name__)

TARGET_LUFS = -16.0
TRUE_PEAK_DB = -1.5
LIMIT = 10 ** (-2.0 / 20)  # sample-peak ceiling that keeps the true peak near TRUE_PEAK_DB
TOLERANCE_LU = 0.3
MAX_PASSES = 4
KEY_LUFS = -20.0  # the voice is brought to this level before it keys the compressor
SILENT_LUFS = -60.0
_SUMMARY_I = re.compile(r"I:\s+(-?[\d.]+|-?inf) LUFS")
_SUMMARY_PEAK = re.compile(r"Peak:\s+(-?[\d.]+|-?inf) dBFS")


@dataclass(frozen=True)
class Loudness:
    integrated: float  # LUFS; -inf for silence
    true_peak: float  # dBTP


@dataclass(frozen=True)
class MusicBed:
    path: Path
    volume_db: float  # the bed's loudness relative to the voice's


def measure(inputs: list[str], graph: str, doing: str) -> Loudness:
    """EBU R128 loudness of the filter graph's output `[out]`, by ffmpeg's ebur128 filter.

    (Not loudnorm's first pass: on speech its `input_i` was found ~0.9 LU below ebur128's and
    below a BS.1770 computation done by hand, which agree.)
    """
    log = ffmpeg_report(
        [*inputs, "-filter_complex", f"{graph};[out]ebur128=peak=true:framelog=verbose[m]",
         "-map", "[m]", "-f", "null", "-"], doing)
    summary = log[log.rfind("Summary:"):]
    integrated, peak = _SUMMARY_I.search(summary), _SUMMARY_PEAK.search(summary)
    if "Summary:" not in log or integrated is None or peak is None:
        raise StageFailed(f"ffmpeg reported no loudness while {doing}; expected ebur128's "
                          "summary")
    return Loudness(_level(integrated.group(1)), _level(peak.group(1)))


def _level(value: str) -> float:
    number = float(value)  # ebur128 writes -70.0 (its gate) for silence, "-inf" peaks
    return number if math.isfinite(number) and number > -70.0 else -math.inf


def _stereo(label_in: str, label_out: str) -> str:
    return (f"[{label_in}]aresample=48000,aformat=sample_fmts=fltp:channel_layouts=stereo"
            f"[{label_out}]")


def mix_graph(speech: int, music: int, *, duration: float, bed_gain_db: float,
              key_gain_db: float, gain_db: float | None, out: str = "out") -> str:
    """Filter graph from input `speech` and (looped) input `music` to `[out]`, 48 kHz stereo.

    `gain_db` None leaves the mix unlevelled (for measuring); otherwise gain and the limiter.
    """
    key = min(max(10 ** (key_gain_db / 20), 0.015625), 64.0)  # sidechaincompress's range
    parts = [
        _stereo(f"{speech}:a", "v0"), "[v0]asplit=2[voice][key]",
        _stereo(f"{music}:a", "m0"),
        f"[m0]atrim=duration={duration:.6f},asetpts=N/SR/TB,volume={bed_gain_db:.3f}dB[bed]",
        f"[bed][key]sidechaincompress=threshold=0.025:ratio=8:attack=15:release=350:"
        f"level_sc={key:.6f}:makeup=1[ducked]",
        "[voice][ducked]amix=inputs=2:duration=first:dropout_transition=0:normalize=0[mix]",
    ]
    parts.append(f"[mix]{_levelled(gain_db)}[{out}]")
    return ";".join(parts)


def _levelled(gain_db: float | None) -> str:
    if gain_db is None:
        return "anull"
    return (f"volume={gain_db:.3f}dB,alimiter=limit={LIMIT:.4f}:attack=2:release=20:"
            "level=false")


def fit_gain(level_at: Callable[[float], float], first: float) -> tuple[float, float]:
    """The gain (dB) whose levelled output is TARGET_LUFS, and the loudness it gives.

    `level_at(g)` measures the finished chain with gain g. A limiter returns roughly half of
    each dB of gain, so the first correction assumes a slope of 0.5, later ones the measured one.
    """
    gain, level = first, level_at(first)
    previous: tuple[float, float] | None = None
    for _ in range(MAX_PASSES - 1):
        if abs(TARGET_LUFS - level) <= TOLERANCE_LU or not math.isfinite(level):
            break
        slope = 0.5
        if previous is not None and gain != previous[0]:
            slope = min(max((level - previous[1]) / (gain - previous[0]), 0.15), 1.0)
        previous = (gain, level)
        gain = min(gain + (TARGET_LUFS - level) / slope, first + 15.0)
        level = level_at(gain)
    return gain, level


@dataclass(frozen=True)
class AudioPlan:
    """The final ffmpeg run's sound: a graph from its speech and music inputs to `[aout]`."""

    graph: str
    loudness: float  # LUFS of the planned output, as measured


def plan_music(speech: Path, bed: MusicBed, duration: float, first_input: int) -> AudioPlan:
    """Measure voice and music, then level the ducked mix. In the final ffmpeg command the
    speech is input `first_input` and the music (looped: -stream_loop -1) the one after it."""
    # the voice as it sits in the mix: upmixed to stereo, which counts 3 LU louder than mono
    voice = measure(["-i", str(speech)], _stereo("0:a", "out"), "measuring the voice's loudness")
    music = measure(["-t", f"{duration:.3f}", "-i", str(bed.path)], "[0:a]anull[out]",
                    "measuring the music's loudness")
    voice_i = voice.integrated if math.isfinite(voice.integrated) else SILENT_LUFS
    if not math.isfinite(music.integrated) or music.integrated < SILENT_LUFS:
        raise StageFailed(f"the music is silent over the first {duration:.1f} s (loudness "
                          f"{music.integrated:.1f} LUFS); upload a track that can be heard")
    bed_gain = voice_i + bed.volume_db - music.integrated
    key_gain = KEY_LUFS - voice_i
    inputs = ["-i", str(speech), "-stream_loop", "-1", "-i", str(bed.path)]

    def level_at(gain: float) -> float:
        graph = mix_graph(0, 1, duration=duration, bed_gain_db=bed_gain, key_gain_db=key_gain,
                          gain_db=gain)
        return measure(inputs, graph, "measuring the mix's loudness").integrated

    gain, level = fit_gain(level_at, TARGET_LUFS - voice_i)
    logger.info("music mix: voice %.1f LUFS, music %.1f LUFS, bed %+.1f dB, gain %+.1f dB -> "
                "%.1f LUFS", voice_i, music.integrated, bed_gain, gain, level)
    graph = mix_graph(first_input, first_input + 1, duration=duration, bed_gain_db=bed_gain,
                      key_gain_db=key_gain, gain_db=gain, out="aout")
    return AudioPlan(graph=graph, loudness=level)
