"""Compose options with real ffmpeg, checked on the output's pixels, samples and loudness."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from synth import (
    band_samples,
    frame_rgb,
    half_mask,
    loudness,
    music,
    picture,
    pixel,
    rms_db,
    solid_video,
    speech,
)

from services.compositor.captions import Cue, to_ass
from services.compositor.layers import Layers, filter_value
from services.compositor.mixing import TARGET_LUFS, MusicBed
from services.compositor.worker import encode
from shared.ffmpeg import verify_result

FPS = 25
PERSON = (200, 40, 40)
SKY = "#1e90ff"
SKY_RGB = (0x1E, 0x90, 0xFF)


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 8) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def video_md5(path: Path) -> str:
    """md5 of the video stream's packets (not decoded): equal means copied bit for bit."""
    return subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v",
                           "-c", "copy", "-f", "md5", "-"],
                          capture_output=True, check=True, text=True).stdout


@pytest.fixture()
def clip(tmp_path: Path) -> dict[str, Path]:
    """2 s of a 128x128 one-colour 'person', a half mask, and 2 s of quiet speech."""
    n = 2 * FPS
    return {
        "video": solid_video(tmp_path / "video.mp4", 128, 128, FPS, n, PERSON),
        "mask": half_mask(tmp_path / "mask.mkv", 128, 128, FPS, n),
        "speech": speech(tmp_path / "speech.wav", 2.0, (0.5, 1.5)),
    }


def test_no_options_copy_the_video_stream(clip: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "result.mp4"
    assert encode(clip["video"], clip["speech"], out, layers=Layers(128, 128, FPS), music=None,
                  duration=2.0, crf=18) is None
    verify_result(out, 2.0, FPS)
    assert video_md5(out) == video_md5(clip["video"])


def test_colour_background_where_the_mask_is_zero(clip: dict[str, Path], tmp_path: Path
                                                  ) -> None:
    out = tmp_path / "result.mp4"
    layers = Layers(128, 128, FPS, mask=clip["mask"], colour=SKY)
    encode(clip["video"], clip["speech"], out, layers=layers, music=None, duration=2.0, crf=18)
    info = verify_result(out, 2.0, FPS)
    assert (info.width, info.height, info.n_frames) == (128, 128, 2 * FPS)
    for index in (0, FPS, 2 * FPS - 1):
        frame = frame_rgb(out, index)
        for x in (4, 32, 56):  # mask 0: the colour
            assert close(pixel(frame, 128, x, 64), SKY_RGB), (index, x, pixel(frame, 128, x, 64))
        for x in (72, 100, 124):  # mask 255: the person, untouched
            assert close(pixel(frame, 128, x, 64), PERSON), (index, x, pixel(frame, 128, x, 64))
    assert video_md5(out) != video_md5(clip["video"])


def test_image_background_covers_the_frame_cropped_not_stretched(
        clip: dict[str, Path], tmp_path: Path) -> None:
    # 4:1 picture whose left 3/8 is green: scaled to cover 128x128 it is 512x128 and only its
    # middle (x 192-320 of 512, all magenta) is kept; stretching would show green at x < 48.
    image = picture(tmp_path / "bg.png", 400, 100, (0, 200, 0), (200, 0, 200), split=150)
    out = tmp_path / "result.mp4"
    layers = Layers(128, 128, FPS, mask=clip["mask"], image=image)
    encode(clip["video"], clip["speech"], out, layers=layers, music=None, duration=2.0, crf=18)
    verify_result(out, 2.0, FPS)
    for index in (0, 2 * FPS - 1):  # the one picture is repeated to the last frame
        frame = frame_rgb(out, index)
        for x, y in ((2, 2), (20, 64), (56, 125)):
            assert close(pixel(frame, 128, x, y), (200, 0, 200)), (index, x, y)
        assert close(pixel(frame, 128, 100, 64), PERSON)


def test_burned_captions_change_only_the_bottom_band(tmp_path: Path) -> None:
    grey = (90, 110, 130)
    video = solid_video(tmp_path / "video.mp4", 256, 256, FPS, 2 * FPS, grey)
    voice = speech(tmp_path / "speech.wav", 2.0, (0.2, 1.8))
    ass = tmp_path / "captions.ass"
    ass.write_text(to_ass([Cue(0.2, 1.9, "Hello there,\nmy friend!")], 256, 256))
    out = tmp_path / "result.mp4"
    layers = Layers(256, 256, FPS, subtitles=ass)
    encode(video, voice, out, layers=layers, music=None, duration=2.0, crf=18)
    verify_result(out, 2.0, FPS)
    frame = frame_rgb(out, FPS)
    top = [pixel(frame, 256, x, y) for y in range(0, 150, 3) for x in range(0, 256, 3)]
    assert all(close(p, grey, 4) for p in top)
    bottom = [pixel(frame, 256, x, y) for y in range(170, 256) for x in range(256)]
    white = sum(1 for p in bottom if min(p) > 200)
    dark = sum(1 for p in bottom if max(p) < 70)  # the box behind the text
    assert white > 50 and dark > 1000, (white, dark)
    before = frame_rgb(out, 0)  # before the cue: nothing drawn anywhere
    assert all(close(pixel(before, 256, x, y), grey, 4)
               for y in range(0, 256, 4) for x in range(0, 256, 4))


def test_crf_sets_the_quality_of_the_reencode(tmp_path: Path) -> None:
    video = tmp_path / "video.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    f"testsrc2=s=128x128:r={FPS}:d=2", "-pix_fmt", "yuv420p", str(video)],
                   check=True)
    mask = half_mask(tmp_path / "mask.mkv", 128, 128, FPS, 2 * FPS)
    voice = speech(tmp_path / "speech.wav", 2.0, (0.5, 1.5))
    sizes = {}
    for crf in (14, 35):
        out = tmp_path / f"crf{crf}.mp4"
        encode(video, voice, out, layers=Layers(128, 128, FPS, mask=mask, colour="#000000"),
               music=None, duration=2.0, crf=crf)
        verify_result(out, 2.0, FPS)
        sizes[crf] = out.stat().st_size
    assert sizes[14] > 2 * sizes[35]


def test_awkward_paths_survive_the_filter_graph(tmp_path: Path) -> None:
    assert filter_value("a'b") == "\\'a\\'\\\\\\'\\'b\\'"
    folder = tmp_path / "it's [a] test, ok; x:y \\ z"
    folder.mkdir()
    video = solid_video(folder / "video.mp4", 128, 128, FPS, FPS, PERSON)
    voice = speech(folder / "speech.wav", 1.0, (0.1, 0.9))
    ass = folder / "captions.ass"
    ass.write_text(to_ass([Cue(0.0, 1.0, "Hi!")], 128, 128))
    out = folder / "result.mp4"
    encode(video, voice, out, layers=Layers(128, 128, FPS, subtitles=ass), music=None,
           duration=1.0, crf=18)
    verify_result(out, 1.0, FPS)
    frame = frame_rgb(out, 10)
    assert any(min(pixel(frame, 128, x, y)) > 200 for y in range(80, 128) for x in range(128))


def test_soft_captions_are_a_subtitle_track_and_the_video_is_copied(
        clip: dict[str, Path], tmp_path: Path) -> None:
    srt = tmp_path / "captions.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:01,500\nHello!\n\n")
    out = tmp_path / "result.mp4"
    encode(clip["video"], clip["speech"], out, layers=Layers(128, 128, FPS), music=None,
           duration=2.0, crf=18, soft_subtitles=srt)
    verify_result(out, 2.0, FPS)
    streams = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                              "stream=codec_type,codec_name", "-of", "csv=p=0", str(out)],
                             capture_output=True, text=True, check=True).stdout.split()
    assert sorted(streams) == ["aac,audio", "h264,video", "mov_text,subtitle"]
    assert video_md5(out) == video_md5(clip["video"])
    text = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(out), "-map", "0:s",
                           "-f", "srt", "-"], capture_output=True, text=True, check=True).stdout
    assert "Hello!" in text and "00:00:00,500 --> 00:00:01,500" in text


MUSIC_BAND = "highpass=f=1500,highpass=f=1500,highpass=f=1500"
VOICE_BAND = "lowpass=f=700,lowpass=f=700,lowpass=f=700"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """5 s of speech (talking 1.5-3.5 s) over a 1.2 s music loop at -10 dB, and at -25 dB."""
    folder = tmp_path_factory.mktemp("mix")
    video = solid_video(folder / "video.mp4", 64, 64, FPS, 5 * FPS, PERSON)
    voice = speech(folder / "speech.wav", 5.0, (1.5, 3.5))
    track = music(folder / "music.flac", 1.2)
    out = {}
    for volume in (-10.0, -25.0):
        result = folder / f"result{volume:.0f}.mp4"
        plan = encode(video, voice, result, layers=Layers(64, 64, FPS),
                      music=MusicBed(track, volume), duration=5.0, crf=18)
        assert plan is not None
        out[volume] = (result, plan)
    return out


def test_music_is_looped_to_the_speech_and_cut_with_it(mixed: dict) -> None:
    result, _ = mixed[-10.0]
    info = verify_result(result, 5.0, FPS)
    assert info.sample_rate == 48000 and abs(info.audio_duration - 5.0) < 0.05
    bed = band_samples(result, MUSIC_BAND)
    first, late = rms_db(bed, 0.2, 1.1), rms_db(bed, 4.2, 4.9)  # late: the 4th loop
    assert first > -45 and abs(first - late) < 2.0, (first, late)


def test_music_ducks_under_the_voice(mixed: dict) -> None:
    result, _ = mixed[-10.0]
    bed = band_samples(result, MUSIC_BAND)
    gap, under = rms_db(bed, 0.2, 1.1), rms_db(bed, 2.0, 3.3)
    assert gap - under >= 6.0, f"music only {gap - under:.1f} dB lower under the voice"
    voice = band_samples(result, VOICE_BAND)
    assert rms_db(voice, 2.0, 3.3) - rms_db(voice, 0.2, 1.1) > 30  # the voice is there, alone


def test_music_volume_sets_the_bed_relative_to_the_voice(mixed: dict) -> None:
    levels = {}
    for volume, (result, _) in mixed.items():
        bed, voice = band_samples(result, MUSIC_BAND), band_samples(result, VOICE_BAND)
        levels[volume] = rms_db(bed, 0.2, 1.1) - rms_db(voice, 1.6, 3.4)
    # plain RMS, not LUFS: K-weighting counts 2.5 kHz ~3.5 dB louder than 300 Hz, and the band
    # filters take ~1.2 dB more from the music than from the voice, so -10 LU reads ~-14.7 dB
    assert -17.5 < levels[-10.0] < -12.0, levels
    assert levels[-10.0] - levels[-25.0] == pytest.approx(15.0, abs=2.0)


def test_mix_is_normalised_to_minus_16_lufs(mixed: dict) -> None:
    for result, plan in mixed.values():
        integrated, peak = loudness(result)
        assert integrated == pytest.approx(TARGET_LUFS, abs=1.0)
        assert plan.loudness == pytest.approx(TARGET_LUFS, abs=0.5)
        assert peak <= -1.0
