// JayAvatar's watch player: plays a job while it renders. fetch() streams
// GET /v1/jobs/{id}/stream (init.mp4, then each compose segment as it is published: one
// fragmented MP4) into the page's Media Source player (player.js), as the Live tab does with
// its WebSocket. The request carries the page's session cookie (same origin), like every other
// call.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const RETRY_MS = 2000;  // after a 503 (nothing to watch yet) while the job still runs
  const watch = {
    job: null,         // id of the job being watched
    controller: null,  // AbortController of the fetch
    player: null,      // the Media Source player (player.js)
    mime: null,
    bytes: 0,          // bytes received
    segments: 0,       // moof+mdat pairs appended (read by the page test)
    startedAt: 0,      // performance.now() of the request
    firstAt: null,     // performance.now() when the first segment was appended
    done: false,       // the stream ended (every byte appended, or stopped)
    plain: false,      // the answer was a plain MP4 (the result), left to the result player
    onDone: null,      // called once playback of a finished stream ends (see finish)
    error: null,
    get frames() {     // frames presented
      return this.player ? this.player.frames : 0;
    },
  };

  function concat(a, b) {
    const out = new Uint8Array(a.length + b.length);
    out.set(a, 0);
    out.set(b, a.length);
    return out;
  }

  const ascii = (bytes, at) => String.fromCharCode(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]);

  function find(bytes, type) {
    for (let i = 0; i + 4 <= bytes.length; i += 1) {
      if (bytes[i] === type.charCodeAt(0) && ascii(bytes, i) === type) return i;
    }
    return -1;
  }

  // The Media Source type of an init segment: avc1.PPCCLL from its avcC box (profile,
  // compatibility, level, as services/visual/live_encoder.py's sps_codec), plus AAC-LC.
  function mimeOf(moov) {
    const at = find(moov, "avcC");
    const hex = (b) => b.toString(16).padStart(2, "0");
    const video = at < 0 ? "avc1.4d401f" : `avc1.${hex(moov[at + 5])}${hex(moov[at + 6])}${hex(moov[at + 7])}`;
    const codecs = find(moov, "mp4a") < 0 ? video : `${video},mp4a.40.2`;
    return `video/mp4; codecs="${codecs}"`;
  }

  // Whole top-level boxes at the front of `bytes`: [boxes, the rest].
  function split(bytes) {
    const out = [];
    let at = 0;
    while (bytes.length - at >= 8) {
      const view = new DataView(bytes.buffer, bytes.byteOffset + at);
      let size = view.getUint32(0);
      if (size === 1 && bytes.length - at >= 16) size = Number(view.getBigUint64(8));
      if (size < 8 || bytes.length - at < size) break;
      out.push({ type: ascii(bytes, at + 4), data: bytes.subarray(at, at + size) });
      at += size;
    }
    return [out, bytes.slice(at)];
  }

  function video() {
    return $("watch-video");
  }

  function show(on) {
    $("watching").hidden = !on;
  }

  // A segment is appended: the first one shows the player and starts playback.
  function appended() {
    watch.segments += 1;
    if (watch.firstAt !== null) return;
    watch.firstAt = performance.now();
    show(true);
    const v = video();
    // Autoplay with sound needs a gesture the page may not have had: then start muted.
    v.play().catch(() => { v.muted = true; v.play().catch(() => {}); });
  }

  function open(mime, init) {
    const players = window.jayavatarPlayer;
    if (!players.supported(mime)) {
      fail(`this browser cannot play ${mime} through Media Source Extensions; download the MP4 once the job is done`);
      return false;
    }
    watch.mime = mime;
    watch.player = players.open(video(), mime, { onAppended: appended, onError: fail });
    watch.player.push(init);
    return true;
  }

  // Reads the response and queues whole boxes: ftyp+moov as the init segment (opening the
  // Media Source with its codecs), then each moof with its mdat.
  async function read(resp, jobId) {
    const reader = resp.body.getReader();
    let rest = new Uint8Array(0);
    let init = null;
    let moof = null;
    for (;;) {
      const { done, value } = await reader.read();
      if (done || watch.job !== jobId) break;
      watch.bytes += value.length;
      const [found, left] = split(concat(rest, value));
      rest = left;
      for (const box of found) {
        if (!watch.player) {
          init = init ? concat(init, box.data) : box.data.slice();
          if (box.type !== "moov") continue;
          if (find(box.data, "mvex") < 0) {  // not fragmented: the finished result.mp4
            watch.plain = true;
            reader.cancel().catch(() => {});
            return;
          }
          if (!open(mimeOf(box.data), init)) {
            reader.cancel().catch(() => {});
            return;
          }
        } else if (box.type === "moof") {
          moof = box.data.slice();
        } else if (box.type === "mdat" && moof) {
          watch.player.push(concat(moof, box.data), "segment");
          moof = null;
        }
      }
    }
  }

  function fail(message) {
    watch.error = message;
    $("watch-note").textContent = message;
    show(true);
  }

  async function start(jobId) {
    stop();
    Object.assign(watch, {
      job: jobId, controller: new AbortController(), bytes: 0, segments: 0,
      startedAt: performance.now(), firstAt: null, done: false, plain: false, onDone: null,
      error: null, mime: null,
    });
    $("watch-note").textContent = "Playing while it renders\u2026";
    const v = video();
    v.onended = () => { if (watch.done && watch.onDone) watch.onDone(); };
    for (;;) {
      let resp;
      try {
        resp = await fetch(`/v1/jobs/${jobId}/stream`, { signal: watch.controller.signal });
        if (resp.status === 503 && watch.job === jobId) {  // nothing yet: the job still waits
          await new Promise((ok) => setTimeout(ok, RETRY_MS));
          continue;
        }
        if (!resp.ok) break;  // 404, 409: the progress card says why
        await read(resp, jobId);
      } catch (err) {
        if (err.name !== "AbortError" && watch.job === jobId) fail(`the watch stream broke: ${err.message}`);
      }
      break;
    }
    if (watch.job !== jobId) return;
    watch.done = true;
    if (watch.player) watch.player.end();
    if (!watch.segments && watch.onDone) watch.onDone();
  }

  function stop() {
    if (watch.controller) watch.controller.abort();
    watch.job = null;
    watch.controller = null;
    if (watch.player) watch.player.close();
    watch.player = null;
    const v = video();
    if (v) v.onended = null;
    if ($("watching")) show(false);
  }

  // The job is over: `then` runs once the watched video has played to its end, at once if
  // nothing was watched. A watcher who paused is not made to wait.
  function finish(jobId, then) {
    const v = video();
    const playing = watch.job === jobId && watch.segments > 0 && !v.ended && !v.paused;
    if (!playing) {
      stop();
      then();
      return;
    }
    watch.onDone = () => { stop(); then(); };
  }

  window.jayavatarWatch = { state: watch, start, stop, finish };
})();
