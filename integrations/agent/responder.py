"""The agent's brain when no LLM is wanted: a few scripted replies, chosen by the words heard.

`ScriptedResponder` sits where an LLM (with its context aggregators) would: it takes each
`TranscriptionFrame` and pushes a `TTSSpeakFrame` with the reply; when the user starts speaking
it interrupts whatever the avatar is saying."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    TranscriptionFrame,
    TTSSpeakFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


@dataclass(frozen=True)
class Rule:
    words: tuple[str, ...]  # any of these, as whole words, picks the rule
    reply: Callable[[str], str]


RULES = (
    Rule(("bye", "goodbye"), lambda _: "Goodbye! It was nice talking with you."),
    Rule(("name", "who"), lambda _: "I am Jay. A face made from one photo, running on this "
                                    "machine."),
    Rule(("time",), lambda _: time.strftime("It is %H:%M here.")),
    Rule(("weather",), lambda _: "I cannot see outside, but I hope it is sunny where you are."),
    Rule(("hello", "hi", "hey"), lambda _: "Hello! Nice to meet you. What would you like to "
                                           "talk about?"),
    Rule(("thanks", "thank"), lambda _: "You are welcome."),
)


def reply_to(heard: str) -> str:
    words = set(re.findall(r"[a-z']+", heard.lower()))
    for rule in RULES:
        if words & set(rule.words):
            return rule.reply(heard)
    return f"I see. You said: {heard.strip().rstrip('.?!')}. Tell me more."


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


class ScriptedResponder(FrameProcessor):
    """Transcriptions in, replies out (as `TTSSpeakFrame`s); everything else passes on."""

    def __init__(self, reply: Callable[[str], str] = reply_to) -> None:
        super().__init__(name="ScriptedResponder")
        self._reply = reply

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            await self.push_frame(frame, direction)
            await self.push_interruption_task_frame_and_wait()
        elif isinstance(frame, TranscriptionFrame) and frame.text.strip():
            await self.push_frame(frame, direction)
            reply = self._reply(frame.text)
            logger.info(f"{self}: heard {frame.text.strip()!r}, answering {reply!r}")
            for sentence in sentences(reply):  # the first is heard sooner
                await self.push_frame(TTSSpeakFrame(sentence))
        else:
            await self.push_frame(frame, direction)
