// JayAvatar's watch player: plays a job while it renders. fetch() streams
// GET /v1/jobs/{id}/stream (init.mp4, then each compose segment as it is published: one
// fragmented MP4) into a Media Source SourceBuffer, as the Live tab does with its WebSocket.
// The request carries the page's session cookie (same origin), like every other call.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const RETRY_MS = 2000;  // after a 503 (nothing to watch yet) while the job still runs
  const watch = {
    job: null,         // id of the job being watched
    controller: null,  // AbortController of the fetch
    media: null,       // MediaSource
    url: null,         // its object URL
    buffer: null,      // SourceBuffer
    queue: [],         // {data, segment} waiting for the SourceBuffer
    appending: false,  // whether the append under way is a segment (not the init)
    mime: null,
    bytes: 0,          // bytes received
    segments: 0,       // moof+mdat pairs appended (read by the page test)
    frames: 0,         // frames presented (requestVideoFrameCallback)
    startedAt: 0,      // performance.now() of the request
    firstAt: null,     // performance.now() when the first segment was appended
    done: false,       // the stream ended (every byte appended, or stopped)
    plain: false,      // the answer was a plain MP4 (the result), left to the result player
    onDone: null,      // called once playback of a finished stream ends (see finish)
    error: null,
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

  function pump() {
    const buffer = watch.buffer;
    if (!buffer || buffer.updating) return;
    if (!watch.queue.length) {
      if (watch.done && watch.media.readyState === "open") watch.media.endOfStream();
      return;
    }
    try {
      buffer.appendBuffer(watch.queue[0].data);
      watch.appending = watch.queue.shift().segment;
    } catch (err) {
      if (err.name !== "QuotaExceededError") return fail(`the browser could not play the stream: ${err.message}`);
      // A long video filled the browser's buffer: drop what has been played, then go on.
      const behind = video().currentTime - 10;
      if (behind > 0) buffer.remove(0, behind);  // its updateend appends again
      else setTimeout(pump, 500);
    }
  }

  function appended() {
    if (watch.appending) {
      watch.appending = false;
      watch.segments += 1;
      if (watch.firstAt === null) {
        watch.firstAt = performance.now();
        show(true);
        const v = video();
        // Autoplay with sound needs a gesture the page may not have had: then start muted.
        v.play().catch(() => { v.muted = true; v.play().catch(() => {}); });
      }
    }
    pump();
  }

  function open(mime, init) {
    if (!window.MediaSource || !MediaSource.isTypeSupported(mime)) {
      fail(`this browser cannot play ${mime} through Media Source Extensions; download the MP4 once the job is done`);
      return false;
    }
    watch.mime = mime;
    watch.media = new MediaSource();
    watch.url = URL.createObjectURL(watch.media);
    const v = video();
    v.src = watch.url;
    watch.queue.push({ data: init, segment: false });
    watch.media.addEventListener("sourceopen", () => {
      watch.buffer = watch.media.addSourceBuffer(mime);
      watch.buffer.mode = "segments";
      watch.buffer.addEventListener("updateend", appended);
      pump();
    }, { once: true });
    const count = () => {
      watch.frames += 1;
      v.requestVideoFrameCallback(count);
    };
    if (v.requestVideoFrameCallback) v.requestVideoFrameCallback(count);
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
        if (!watch.media) {
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
          watch.queue.push({ data: concat(moof, box.data), segment: true });
          moof = null;
        }
      }
      pump();
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
      job: jobId, controller: new AbortController(), queue: [], bytes: 0, segments: 0,
      frames: 0, appending: false, startedAt: performance.now(), firstAt: null, done: false,
      plain: false, onDone: null, error: null, mime: null,
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
    pump();
    if (!watch.segments && watch.onDone) watch.onDone();
  }

  function stop() {
    if (watch.controller) watch.controller.abort();
    watch.job = null;
    watch.controller = null;
    watch.buffer = null;
    watch.media = null;
    const v = video();
    if (v) {
      v.onended = null;
      v.removeAttribute("src");
      v.load();
    }
    if (watch.url) URL.revokeObjectURL(watch.url);
    watch.url = null;
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
