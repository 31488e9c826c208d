// JayAvatar's Live tab: start a live session with an avatar, play its fragmented-MP4 stream
// through the page's Media Source player (player.js), send lines (Enter), show captions at
// their media time.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const live = {
    session: null,   // {id, ws_url}
    ws: null,
    player: null,    // the Media Source player (player.js)
    captions: [],    // {text, start, end}
    offset: 0,       // media time of the current stream's first frame
    events: [],      // every JSON event, with its arrival time (performance.now())
    sent: {},        // line id -> performance.now() when its say was sent
    send: (message) => send(message),
    get frames() {   // frames presented, for the page test
      return this.player ? this.player.frames : 0;
    },
  };
  window.jayavatarLive = live;  // read by the headless-browser test

  async function call(path, options = {}) {
    const resp = await fetch(path, options);
    const body = (resp.headers.get("content-type") || "").includes("json")
      ? await resp.json().catch(() => null) : null;
    if (!resp.ok) throw new Error(body && body.message ? body.message : `${resp.status} ${resp.statusText}`);
    return body;
  }

  function showError(message) {
    $("live-error").textContent = message;
    $("live-error").hidden = !message;
  }

  function showTab(name) {
    for (const el of document.querySelectorAll("[data-tab]")) el.hidden = el.dataset.tab !== name;
    $("tab-make").setAttribute("aria-selected", String(name === "make"));
    $("tab-live").setAttribute("aria-selected", String(name === "live"));
    if (name === "live") loadAvatars().catch((err) => showError(err.message));
  }

  async function loadAvatars(select) {
    const avatars = await call("/v1/avatars");
    const list = $("live-avatar");
    const keep = select || list.value;
    list.replaceChildren(...avatars.map((a) => {
      const opt = document.createElement("option");
      opt.value = a.id;
      opt.textContent = a.name || a.id;
      return opt;
    }));
    if (keep) list.value = keep;
    $("live-start").disabled = !avatars.length && !$("live-portrait").files.length;
  }

  async function addPortrait() {
    const file = $("live-portrait").files[0];
    if (!file) return;
    const form = new FormData();
    form.append("portrait", file);
    $("live-state").textContent = "analysing the photo";
    const avatar = await call("/v1/avatars", { method: "POST", body: form });
    $("live-portrait").value = "";
    await loadAvatars(avatar.id);
    $("live-state").textContent = "off";
  }

  function setState(text) {
    $("live-state").textContent = text;
  }

  function keepLive() {
    // stay at the live edge: a browser that fell behind (tab hidden, slow start) jumps ahead
    const video = $("live-video");
    const ranges = video.buffered;
    if (!live.rtc && !ranges.length) return;
    if (!live.rtc) {
      const end = ranges.end(ranges.length - 1);
      if (end - video.currentTime > 1.0) video.currentTime = end - 0.15;
    }
    const now = live.rtc ? live.rtc.mediaTime() : video.currentTime;  // WebRTC: webrtc.js
    const cue = live.captions.find((c) => c.start <= now && now < c.end);
    $("live-caption").textContent = cue ? cue.text : "";
    live.captions = live.captions.filter((c) => c.end > now - 1);
  }

  function onEvent(event) {
    live.events.push({ at: performance.now(), event });
    window.jayavatarPersona.onEvent(event);  // persona.js: states, emotion, debug overlay
    switch (event.type) {
      case "ready":
      case "restart": {
        live.offset = event.media_time || 0;
        if (event.type === "ready" && !live.rtc) openMedia(event.mime);  // WebRTC: tracks
        else if (live.player) live.player.moveTo(live.offset);  // a worker took it over
        setState(event.type === "ready" ? "idle" : "reconnected");
        $("live-line").disabled = false;
        $("live-stop").disabled = false;
        break;
      }
      case "state":
        setState(event.state);
        break;
      case "caption":
        live.captions.push({ text: event.text, start: event.start, end: event.end });
        break;
      case "error":
        showError(event.message);
        break;
      default:
        break;
    }
  }

  function openMedia(mime) {
    const players = window.jayavatarPlayer;
    if (live.player) live.player.close();
    live.player = null;
    if (!players.supported(mime)) {
      showError(`this browser cannot play ${mime} through Media Source Extensions`);
      return;
    }
    const video = $("live-video");
    live.player = players.open(video, mime, {
      offset: live.offset,
      onOpen: () => window.jayavatarPersona.play(video),  // a tap for sound where needed
      onError: showError,
    });
  }

  async function start() {
    showError("");
    try {
      if ($("live-portrait").files.length) await addPortrait();
      const avatarId = $("live-avatar").value;
      if (!avatarId) throw new Error("pick an avatar first, or add a portrait");
      live.session = await call("/v1/sessions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ avatar_id: avatarId, size: Number($("live-size").value) }),
      });
    } catch (err) {
      showError(err.message);
      return;
    }
    $("live-id").textContent = live.session.id;
    $("live-start").hidden = true;
    $("live-end").hidden = false;
    setState("connecting");
    if ($("live-webrtc").checked) {  // webrtc.js: tracks and a data channel instead of the socket
      if (live.player) live.player.close();
      live.player = null;
      live.rtc = live.ws = window.jayavatarWebRTC.open(live.session, $("live-video"),
        { onEvent, onClose: (code, reason) => ended({ code, reason }) });
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}${live.session.ws_url}`);
    ws.binaryType = "arraybuffer";
    live.ws = ws;
    ws.onmessage = (msg) => {
      if (typeof msg.data === "string") {
        onEvent(JSON.parse(msg.data));
      } else if (live.player) {
        live.player.push(msg.data);
      }
    };
    ws.onclose = ended;
  }

  function ended(msg) {
    setState("ended");
    // 1013 Redis away, 4008 not reading, 4429 too many sockets: the session itself goes on
    const what = [1013, 4008, 4429].includes(msg.code) ? "the stream stopped" : "the session ended";
    if (msg.code !== 1000) showError(`${what}: ${msg.reason || msg.code}`);
    reset();
  }

  function reset() {
    $("live-line").disabled = true;
    $("live-stop").disabled = true;
    $("live-start").hidden = false;
    $("live-end").hidden = true;
    live.ws = null;
    live.rtc = null;
  }

  function send(message) {
    if (live.ws && live.ws.readyState === WebSocket.OPEN) live.ws.send(JSON.stringify(message));
  }

  function say(event) {
    if (event.key !== "Enter") return;
    event.preventDefault();
    const text = $("live-line").value.trim();
    if (!text) return;
    const id = `l${Date.now().toString(36)}`;
    live.sent[id] = performance.now();
    send({ type: "say", text, id, ...window.jayavatarPersona.feeling() });
    $("live-line").value = "";
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("tab-make").addEventListener("click", () => showTab("make"));
    $("tab-live").addEventListener("click", () => showTab("live"));
    $("live-start").addEventListener("click", start);
    $("live-end").addEventListener("click", () => send({ type: "close" }));
    $("live-stop").addEventListener("click", () => send({ type: "stop" }));
    $("live-line").addEventListener("keydown", say);
    $("live-portrait").addEventListener("change", () => { $("live-start").disabled = false; });
    setInterval(keepLive, 100);
  });
})();
