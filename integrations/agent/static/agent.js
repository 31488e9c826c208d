// The agent's page: the microphone goes to the agent over WebRTC (Pipecat's SmallWebRTC
// transport: POST /api/offer), the avatar's video and voice come back on the same connection.
// window.agentStats measures, at the browser, each turn's end of the user's speech (the
// microphone's level falls) to the avatar's first audible sound (its audio's level rises).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const LOUD = 0.02;          // RMS (of -1..1 samples) above which a sound is heard
  const TURN_END_MS = 250;    // this long below LOUD ends the user's speech
  const stats = { latencies: [], turns: 0, frames: 0, firstFrameMs: null };
  window.agentStats = stats;
  let pc = null;
  let offeredAt = 0;

  function level(analyser, buffer) {
    analyser.getFloatTimeDomainData(buffer);
    let sum = 0;
    for (const v of buffer) sum += v * v;
    return Math.sqrt(sum / buffer.length);
  }

  function measure(mic, remote) {
    // two analysers polled every 10 ms: the user's speech ends, then the avatar's voice starts
    const ctx = new AudioContext();
    const micA = ctx.createAnalyser();
    const botA = ctx.createAnalyser();
    micA.fftSize = botA.fftSize = 512;
    ctx.createMediaStreamSource(mic).connect(micA);
    ctx.createMediaStreamSource(remote).connect(botA);
    const buffer = new Float32Array(512);
    let lastLoud = null;   // the user's last loud moment
    let ended = null;      // the end of the user's speech, while no answer was heard yet
    let botQuiet = false;  // the avatar was silent at some moment since `ended`
    setInterval(() => {
      const now = performance.now();
      const bot = level(botA, buffer) > LOUD;
      if (level(micA, buffer) > LOUD) { lastLoud = now; ended = null; return; }
      if (lastLoud !== null && ended === null && now - lastLoud > TURN_END_MS) {
        ended = lastLoud;
        botQuiet = false;
        stats.turns += 1;
      }
      if (ended === null) return;
      if (!bot) botQuiet = true;
      else if (botQuiet) {  // the avatar starts to speak after the user stopped
        stats.latencies.push(now - ended);
        ended = null;
        lastLoud = null;
      }
    }, 10);
  }

  function gathered() {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") resolve();
      });
      setTimeout(resolve, 3000);
    });
  }

  function countFrames(video) {
    const tick = () => {
      if (!stats.frames) stats.firstFrameMs = performance.now() - offeredAt;
      stats.frames += 1;
      video.requestVideoFrameCallback(tick);
    };
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(tick);
  }

  async function start() {
    $("error").hidden = true;
    $("state").textContent = "connecting";
    $("start").hidden = true;
    const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    pc = new RTCPeerConnection();
    for (const track of mic.getTracks()) pc.addTrack(track, mic);
    pc.addTransceiver("video", { direction: "recvonly" });
    const remote = new MediaStream();
    const video = $("face");
    pc.ontrack = (event) => {
      remote.addTrack(event.track);
      video.srcObject = remote;
      video.play().catch(() => {});
      if (event.track.kind === "audio") measure(mic, remote);
    };
    pc.onconnectionstatechange = () => { $("state").textContent = pc.connectionState; };
    countFrames(video);
    await pc.setLocalDescription(await pc.createOffer());
    await gathered();
    offeredAt = performance.now();
    const resp = await fetch("/api/offer", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
    });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.message || resp.status);
    await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    $("stop").hidden = false;
  }

  function stop() {
    if (pc) pc.close();
    pc = null;
    $("state").textContent = "off";
    $("stop").hidden = true;
    $("start").hidden = false;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("start").addEventListener("click", () => start().catch((err) => {
      $("error").textContent = err.message;
      $("error").hidden = false;
      stop();
    }));
    $("stop").addEventListener("click", stop);
  });
})();
