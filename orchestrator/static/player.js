// JayAvatar's Media Source player, shared by the Live tab (live.js) and the watch player
// (watch.js): fragmented-MP4 bytes in (the init segment first, then moof+mdat fragments),
// appended in order to one SourceBuffer of a <video>. When the browser's buffer is full, what
// has been played is dropped and appending goes on.
"use strict";

window.jayavatarPlayer = (() => {
  const KEEP_BEHIND_S = 10;  // a full buffer keeps this much behind the playhead
  const FULL_RETRY_MS = 500;  // ... and, with nothing to drop yet, tries again this much later

  function supported(mime) {
    return Boolean(window.MediaSource) && MediaSource.isTypeSupported(mime);
  }

  // Plays `mime` bytes into `video` (check `supported(mime)` first). Options:
  //   offset      media time of the first bytes (the SourceBuffer's timestampOffset)
  //   onOpen()    the SourceBuffer exists: appending has begun
  //   onAppended(tag)  bytes pushed with `tag` (anything but undefined) are appended
  //   onError(message) the browser refused some bytes; they are dropped
  function open(video, mime, options = {}) {
    const queue = [];  // {data, tag} or {offset}, in order
    const media = new MediaSource();
    const url = URL.createObjectURL(media);
    let buffer = null;
    let appending;  // the tag of the append under way
    let ended = false;
    let closed = false;

    const player = {
      frames: 0,  // frames presented (requestVideoFrameCallback)
      // queue bytes (ArrayBuffer or Uint8Array) to append after what is queued
      push(data, tag) {
        queue.push({ data, tag });
        pump();
      },
      // the bytes pushed from now on play from media time `offset` (a new timeline)
      moveTo(offset) {
        queue.push({ offset });
        pump();
      },
      // no more bytes: the stream ends once what is queued is appended
      end() {
        ended = true;
        pump();
      },
      // detach from the video and let go of the Media Source
      close() {
        closed = true;
        buffer = null;
        video.removeAttribute("src");
        video.load();
        URL.revokeObjectURL(url);
      },
    };

    function pump() {
      if (closed || !buffer || buffer.updating) return;
      while (queue.length && queue[0].offset !== undefined) {
        buffer.timestampOffset = queue.shift().offset;
      }
      if (!queue.length) {
        if (ended && media.readyState === "open") media.endOfStream();
        return;
      }
      try {
        buffer.appendBuffer(queue[0].data);
        appending = queue.shift().tag;
      } catch (err) {
        if (err.name !== "QuotaExceededError") {
          queue.shift();
          if (options.onError) options.onError(`the browser could not play the stream: ${err.message}`);
          return;
        }
        const behind = video.currentTime - KEEP_BEHIND_S;
        if (behind > 0) buffer.remove(0, behind);  // its updateend appends again
        else setTimeout(pump, FULL_RETRY_MS);
      }
    }

    function appended() {
      const tag = appending;
      appending = undefined;
      if (tag !== undefined && !closed && options.onAppended) options.onAppended(tag);
      pump();
    }

    video.src = url;
    media.addEventListener("sourceopen", () => {
      if (closed) return;
      buffer = media.addSourceBuffer(mime);
      buffer.mode = "segments";
      buffer.timestampOffset = options.offset || 0;
      buffer.addEventListener("updateend", appended);
      pump();
      if (options.onOpen) options.onOpen();
    }, { once: true });
    const count = () => {
      if (closed) return;
      player.frames += 1;
      video.requestVideoFrameCallback(count);
    };
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(count);
    return player;
  }

  return { supported, open };
})();
