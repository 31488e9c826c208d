// The Live tab's persona controls (live.js runs the session): state buttons (idle, listening,
// thinking), the emotion of the next line, a debug overlay behind a checkbox, and sound that
// starts after a tap where the browser blocks autoplay with sound (iOS Safari): the picture
// plays muted until then.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const shown = {
    state: "off", emotion: "neutral", latency: null, frames: 0, fps: 0, at: 0, muted: false,
  };

  function live() {
    return window.jayavatarLive;
  }

  function feeling() {
    const emotion = $("live-emotion").value;
    return emotion === "neutral" ? {} : { emotion, intensity: Number($("live-intensity").value) };
  }

  function setState(state) {
    live().send({ type: "state", state });
  }

  // Play the video; where sound may not start without a tap, play it muted and offer the tap.
  function play(video) {
    video.play().catch((err) => {
      if (err.name !== "NotAllowedError") return;
      video.muted = true;
      shown.muted = true;
      $("live-unmute").hidden = false;
      video.play().catch(() => {});
    });
  }

  function unmute() {
    const video = $("live-video");
    video.muted = false;
    shown.muted = false;
    $("live-unmute").hidden = true;
    video.play().catch(() => {});
  }

  function onEvent(event) {
    const l = live();
    if (event.type === "state") {
      shown.state = event.state;
      for (const b of document.querySelectorAll("[data-live-state]")) {
        b.setAttribute("aria-pressed", String(b.dataset.liveState === event.state));
      }
    } else if (event.type === "emotion") {
      shown.emotion = event.emotion === "neutral" ? "neutral"
        : `${event.emotion} ${Number(event.intensity).toFixed(2)}`;
    } else if (event.type === "speech.start" && l.sent[event.id]) {
      shown.latency = performance.now() - l.sent[event.id];
    } else if (event.type === "notes") {
      $("live-notes").textContent = event.notes.join(" ");
      $("live-notes").hidden = false;
    } else if (event.type === "ready") {
      shown.state = "idle";
    }
  }

  function socketState() {
    const ws = live().ws;
    if (!ws) return "closed";
    return ["connecting", "open", "closing", "closed"][ws.readyState] || "open";
  }

  function refresh() {
    const now = performance.now();
    const frames = live().frames;
    if (now - shown.at >= 1000) {
      shown.fps = shown.at ? (frames - shown.frames) * 1000 / (now - shown.at) : 0;
      shown.frames = frames;
      shown.at = now;
    }
    for (const b of document.querySelectorAll("[data-live-state]")) {
      b.disabled = socketState() !== "open";
    }
    if ($("live-overlay").hidden) return;
    const video = $("live-video");
    const ranges = video.buffered;
    const buffered = ranges.length ? ranges.end(ranges.length - 1) - video.currentTime : 0;
    const rows = [
      ["socket", socketState()],
      ["frames/s", shown.fps.toFixed(1)],
      ["buffered", `${buffered.toFixed(2)} s`],
      ["state", shown.state],
      ["emotion", shown.emotion],
      ["last line", shown.latency === null ? "-" : `${Math.round(shown.latency)} ms`],
      ["sound", shown.muted ? "muted: tap" : "on"],
    ];
    $("live-overlay").replaceChildren(...rows.map(([k, v]) => {
      const row = document.createElement("div");
      row.dataset.key = k;
      row.textContent = `${k}: ${v}`;
      return row;
    }));
  }

  window.jayavatarPersona = { play, onEvent, feeling, shown };

  document.addEventListener("DOMContentLoaded", () => {
    for (const b of document.querySelectorAll("[data-live-state]")) {
      b.addEventListener("click", () => setState(b.dataset.liveState));
    }
    $("live-debug").addEventListener("change", () => {
      $("live-overlay").hidden = !$("live-debug").checked;
      refresh();
    });
    $("live-unmute").addEventListener("click", unmute);
    $("live-intensity").addEventListener("input", () => {
      $("live-intensity-value").textContent = Number($("live-intensity").value).toFixed(1);
    });
    setInterval(refresh, 250);
  });
})();
