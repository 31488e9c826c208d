"""Audio lines on the live timeline, in the visual venv: pieces of any size placed in whole
frames back to back (the audio heard is the audio sent), a buffer that grows when the audio runs
dry, idle frames in the gaps, and a mouth that follows the sound with no seams between pieces."""

from __future__ import annotations

import numpy as np

from services.visual.live_audio import AudioLine, estimated_visemes
from services.visual.live_motion import LiveMotion

FPS, RATE = 25, 22050
SPF = RATE // FPS


def _voice(seconds: float, seed: int = 0) -> np.ndarray:
    """Voiced syllables (a 140 Hz buzz, 4 a second) with short pauses: speech-like loudness."""
    t = np.arange(round(seconds * RATE)) / RATE
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 2 * t), 0, None) ** 0.7
    noise = np.random.default_rng(seed).standard_normal(len(t)) * 0.01
    return (0.25 * buzz * envelope + noise).astype(np.float32)


def _run(m: LiveMotion, line: AudioLine, arrivals: dict[int, list[np.ndarray]], frames: int,
         last_at: int) -> tuple[np.ndarray, list]:
    """Draw `frames` frames; before frame f, the pieces arriving then are added."""
    placed, audio, params = [], [], []
    for f in range(frames):
        for k, piece in enumerate(arrivals.get(f, [])):
            placed += line.add(f, piece, last=f == last_at and k == len(arrivals[f]) - 1)
        p, a = m.frame(f)
        params.append(p)
        audio.append(a)
    return np.concatenate(audio).astype(np.float32) / 32768, [placed, params]


def _motion() -> LiveMotion:
    return LiveMotion(FPS, RATE, mouth_width=60.0, face_width=240.0, seed=3)


def test_real_time_pieces_play_back_to_back_as_sent() -> None:
    """20 ms pieces arriving at real time (two a frame): the line starts two frames (80 ms)
    after its first whole frame came, every frame after it holds the next samples, nothing is
    lost."""
    x = _voice(2.0)
    pieces = [x[a:a + 441] for a in range(0, len(x), 441)]
    arrivals = {10 + k // 2: [] for k in range(len(pieces))}
    for k, piece in enumerate(pieces):
        arrivals[10 + k // 2].append(piece)
    m = _motion()
    line = AudioLine(m, "a1", "1-0", "words", first=True)
    audio, (placed, _) = _run(m, line, arrivals, 90, max(arrivals))
    assert placed[0].start == 12 and placed[0].seq == 0 and placed[-1].last
    assert all(b.start == a.end for a, b in zip(placed, placed[1:], strict=False))
    heard = audio[12 * SPF:12 * SPF + len(x)]
    assert np.abs(heard - x).max() < 1e-4  # the samples sent, in order, no gap
    assert line.dry == 0


def test_a_burst_is_placed_at_once() -> None:
    x = _voice(3.0)
    m = _motion()
    line = AudioLine(m, "b", "1-0", "", first=True)
    placed = line.add(5, x, last=True)
    assert len(placed) == 1 and placed[0].start == 7 and placed[0].last
    assert placed[0].n_frames == -(-len(x) // SPF)  # the tail padded to a whole frame


def test_late_audio_leaves_idle_gaps_and_the_buffer_grows() -> None:
    """Audio at half real time: the line runs dry again and again; the gaps are silent with a
    shut mouth while the head keeps moving, the buffer grows a frame each time up to 0.2 s,
    and every sample sent is still heard once, in order."""
    x = _voice(2.0)
    pieces = [x[a:a + 2 * SPF] for a in range(0, len(x), 2 * SPF)]  # 80 ms each ...
    arrivals = {4 * k: [p] for k, p in enumerate(pieces)}  # ... every 160 ms
    m = _motion()
    line = AudioLine(m, "slow", "1-0", "", first=True)
    audio, (placed, params) = _run(m, line, arrivals, 4 * len(pieces) + 20, max(arrivals))
    assert line.dry >= 4 and line.buffer_frames == 5
    gaps = [(a.end, b.start) for a, b in zip(placed, placed[1:], strict=False)
            if b.start > a.end]
    assert len(gaps) == line.dry
    for g0, g1 in gaps:
        assert np.abs(audio[g0 * SPF:g1 * SPF]).max() == 0
        assert all(params[f].opening == 0 for f in range(g0, g1))
    tx = [p.tx for p in params]
    assert np.ptp(tx[gaps[-1][0]:gaps[-1][1]]) > 0  # idle sway, not a frozen face
    heard = np.concatenate([audio[p.start * SPF:p.end * SPF] for p in placed])
    assert np.abs(heard[:len(x)] - x).max() < 1e-4


def test_the_mouth_follows_the_sound_with_no_seams_between_pieces() -> None:
    """Tracks made piece by piece (20 ms pieces) match those made from the whole line but for
    the look-ahead a whole line has, the mouth opens with the loudness, and the head's motion
    never jumps where pieces meet."""
    x = _voice(2.0, seed=4)
    whole_m = _motion()
    whole = AudioLine(whole_m, "w", "1-0", "", first=True).add(0, x, last=True)[0]
    m = _motion()
    line = AudioLine(m, "p", "1-0", "", first=True)
    pieces = [x[a:a + 441] for a in range(0, len(x), 441)]
    arrivals = {k // 2: [p] for k, p in enumerate(pieces) if k % 2 == 0}
    for k, p in enumerate(pieces):
        if k % 2:
            arrivals[k // 2].append(p)
    _, (placed, _) = _run(m, line, arrivals, 70, max(arrivals))
    opening = np.concatenate([p.opening for p in placed])
    n = min(len(opening), whole.n_frames) - 2
    assert np.abs(opening[:n] - whole.opening[:n]).mean() < 0.04
    assert np.corrcoef(opening[:n], whole.opening[:n])[0, 1] > 0.97
    energy = np.concatenate([[0.0]] + [p.energy for p in placed])
    assert np.abs(np.diff(energy)).max() <= 0.15 + 1e-6 and energy.max() == 1.0
    rms = np.sqrt(np.mean(x[:n * SPF].reshape(n, SPF) ** 2, axis=1))
    assert np.corrcoef(rms, whole.opening[:n])[0, 1] > 0.8
    names = {name for _, name in estimated_visemes(whole, 60.0, 0.0, FPS)}
    assert "rest" in names and names - {"rest"}


def test_the_end_after_the_audio_ran_out_ends_the_line_now() -> None:
    m = _motion()
    line = AudioLine(m, "e", "1-0", "", first=True)
    first = line.add(0, _voice(0.4), last=False)[0]
    assert not line.add(first.end + 5, np.zeros(0, np.float32), last=True)
    assert not line.finish(first.end + 5)  # nothing left to play: speech.end is due now
    waiting = AudioLine(m, "w", "2-0", "", first=True)
    piece = waiting.add(first.end + 5, _voice(0.4), last=False)[0]
    assert waiting.finish(piece.start) and piece.last  # its last piece ends the line


def test_frames_waited_are_taken_back_from_the_pauses() -> None:
    """Speech with pauses sent at real time, its pieces held up once for 0.6 s: the line runs
    dry and plays later than sent from then on, until frames of its next pauses are dropped
    (never the first PAUSE_FRAMES of one, never a sound); it ends no later than its buffer
    grew, every voiced sample heard in order."""
    voiced = _voice(0.6)
    x = np.concatenate([np.concatenate([voiced, np.zeros(SPF * 12, np.float32)])
                        for _ in range(6)])
    pieces = [x[a:a + 441] for a in range(0, len(x), 441)]
    arrivals: dict[int, list[np.ndarray]] = {}
    for k, piece in enumerate(pieces):
        arrivals.setdefault(max(10 + k // 2, 45) if 30 <= 10 + k // 2 < 45 else 10 + k // 2,
                            []).append(piece)
    m = _motion()
    line = AudioLine(m, "c", "1-0", "", first=True)
    audio, (placed, _) = _run(m, line, arrivals, 10 + len(pieces) // 2 + 40, max(arrivals))
    assert line.dry == 1 and line.dropped > 0
    assert 0 <= line.late <= (line.buffer_frames - line.least_buffer) * SPF
    start, period = placed[0].start * SPF, len(voiced) + 12 * SPF
    at = start
    for k in range(6):  # each voiced part whole, in order, never sooner than sent (the
        found = at + int(np.flatnonzero(audio[at:])[0])  # pauses are exact zeros)
        assert found >= start + k * period
        assert np.abs(audio[found:found + len(voiced)] - voiced).max() < 1e-4
        at = found + len(voiced)
    assert found - (start + 5 * period) == line.late  # the last: as late as the line ends


def test_pieces_know_the_speech_entries_they_play() -> None:
    """What a worker taking the session over needs: which speech entry each placed sample came
    from, and where the first sample not placed yet lies."""
    x = _voice(0.2)
    m = _motion()
    line = AudioLine(m, "s", "1-0", "", first=True)
    first = line.add(0, x[:1000], last=False, entry="1-0")  # one frame (882 samples) of it
    second = line.add(0, x[1000:3000], last=False, entry="2-0")  # two more frames
    assert [p.sources for p in first + second] == [[("1-0", 0)], [("1-0", -882), ("2-0", 118)]]
    assert line.unplaced() == ("2-0", 2646 - 1000)
    resumed = AudioLine(m, "s", "1-0", "", first=False)  # from entry 2-0's sample 1646 on
    assert resumed.add(20, x[2646:3000], last=True, entry="2-0", into=1646)[0].sources == [
        ("2-0", -1646)]
