// The Live tab's WebRTC player: plays a live session as a WebRTC peer (POST
// /v1/sessions/{id}/webrtc with the offer, the answer back; docs/webrtc.md) instead of the
// WebSocket's Media Source stream. The session's events come on the data channel "jayavatar",
// which also takes the socket's commands (say, stop, close), so live.js uses the handle
// `open()` returns as it uses its WebSocket.
"use strict";

(() => {
  const OPEN = 1;  // WebSocket.OPEN, for live.js's readyState check

  function gathered(pc) {
    // the offer goes whole (no trickled candidates): wait for the browser's candidates
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000);  // a host with many interfaces: go with what there is
    });
  }

  function countFrames(video, stats) {
    if (!video.requestVideoFrameCallback) return;
    const tick = () => {
      if (!stats.frames) stats.firstFrameMs = performance.now() - stats.offeredAt;
      stats.frames += 1;
      if (!stats.closed) video.requestVideoFrameCallback(tick);
    };
    video.requestVideoFrameCallback(tick);
  }

  function open(session, video, { onEvent, onClose }) {
    const pc = new RTCPeerConnection();
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const channel = pc.createDataChannel("jayavatar");
    const stats = { frames: 0, firstFrameMs: null, offeredAt: null, peerId: null, closed: false };
    const stream = new MediaStream();
    let clock = null;  // the media time of a picture as it was sent, and when it came
    let delay = 0.1;   // seconds a picture waits in the browser's jitter buffer

    async function measureDelay() {
      if (stats.closed) return;
      const report = await pc.getStats().catch(() => null);
      for (const s of report ? report.values() : []) {
        if (s.type === "inbound-rtp" && s.kind === "video" && s.jitterBufferEmittedCount) {
          delay = s.jitterBufferDelay / s.jitterBufferEmittedCount;
        }
      }
      setTimeout(measureDelay, 2000);
    }

    function finish(code, reason) {
      if (stats.closed) return;
      stats.closed = true;
      pc.close();
      video.srcObject = null;
      onClose(code, reason);
    }

    pc.ontrack = (event) => {
      stream.addTrack(event.track);
      if (video.srcObject !== stream) video.srcObject = stream;
      video.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") finish(1006, "the WebRTC connection failed");
    };
    channel.onmessage = (message) => {
      if (typeof message.data !== "string") return;
      const event = JSON.parse(message.data);
      if (event.type === "closed") finish(event.code, event.reason);
      else if (event.type === "clock") clock = { media: event.media_time, at: performance.now() };
      else onEvent(event);
    };
    countFrames(video, stats);

    (async () => {
      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc);
      stats.offeredAt = performance.now();
      const resp = await fetch(`/v1/sessions/${session.id}/webrtc`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
      });
      const body = await resp.json().catch(() => null);
      if (!resp.ok) throw new Error(body && body.message ? body.message : `${resp.status}`);
      stats.peerId = body.peer_id;
      await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    })().catch((err) => finish(4000, `WebRTC: ${err.message}`));

    measureDelay();

    const handle = {
      stats,
      // the session's media time of the picture on screen now (captions are timed in it)
      mediaTime() {
        return clock ? clock.media + (performance.now() - clock.at) / 1000 - delay : -1;
      },
      get readyState() { return channel.readyState === "open" ? OPEN : 0; },
      send(data) { if (channel.readyState === "open") channel.send(data); },
      close() { finish(1000, "closed"); },
    };
    window.jayavatarWebRTC.last = handle;  // read by the headless-browser test
    return handle;
  }

  window.jayavatarWebRTC = {
    open,
    supported: () => typeof RTCPeerConnection === "function",
    last: null,
  };
})();
