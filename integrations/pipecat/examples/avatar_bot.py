"""A voice agent whose face is a JayAvatar, in the browser over Pipecat's local WebRTC transport.

The ears (OpenAI Whisper), brain (an OpenAI LLM) and voice (Piper) are ordinary Pipecat
services; swap any of them. The avatar sits right after the TTS service: it takes the TTS
audio and puts the avatar's video and the same speech, in sync, into the output transport.

    pip install "pipecat-ai[webrtc,runner,silero,openai,piper]==1.14.0" -e integrations/pipecat
    make run                                   # JayAvatar on http://127.0.0.1:8000
    export OPENAI_API_KEY=... JAYAVATAR_AVATAR_ID=...  # an avatar made in its web page or API
    python integrations/pipecat/examples/avatar_bot.py  # then open http://localhost:7860
"""

import os

from jayavatar_pipecat import JayAvatarVideoService
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.runner.types import RunnerArguments
from pipecat.runner.utils import create_transport
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.openai.stt import OpenAISTTService
from pipecat.services.piper.tts import PiperTTSService
from pipecat.transports.base_transport import TransportParams
from pipecat.workers.runner import WorkerRunner

SIZE = 512  # the session's picture is SIZE x SIZE (the default "square" aspect)

transport_params = {
    "webrtc": lambda: TransportParams(
        audio_in_enabled=True,
        audio_out_enabled=True,
        video_out_enabled=True,
        video_out_is_live=True,  # each avatar frame is shown as it comes, at its frame rate
        video_out_width=SIZE,
        video_out_height=SIZE,
        video_out_framerate=25,
    ),
}


async def bot(runner_args: RunnerArguments) -> None:
    transport = await create_transport(runner_args, transport_params)
    stt = OpenAISTTService(api_key=os.environ["OPENAI_API_KEY"])
    llm = OpenAILLMService(api_key=os.environ["OPENAI_API_KEY"])
    tts = PiperTTSService(voice_id="en_US-ryan-high")
    avatar = JayAvatarVideoService(
        base_url=os.environ.get("JAYAVATAR_URL", "http://127.0.0.1:8000"),
        avatar_id=os.environ["JAYAVATAR_AVATAR_ID"],
        api_token=os.environ.get("JAYAVATAR_TOKEN"),
        size=SIZE,
        fps=25,
    )
    context = LLMContext([{"role": "system", "content":
                           "You are a friendly assistant on a video call. Answer in one or "
                           "two short spoken sentences."}])
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer()))

    pipeline = Pipeline([
        transport.input(),
        stt,
        aggregators.user(),
        llm,
        tts,
        avatar,  # TTS audio in; the avatar's video and speech out
        transport.output(),
        aggregators.assistant(),
    ])
    worker = PipelineWorker(pipeline, params=PipelineParams(enable_metrics=True))
    runner = WorkerRunner(handle_sigint=runner_args.handle_sigint)
    await runner.add_workers(worker)
    await runner.run()


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
