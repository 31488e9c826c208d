// JayAvatar's page: upload a portrait, submit text, follow the job over server-sent events,
// play the result. Plain JS, no build step; every API error shows its JSON `message`.
"use strict";

const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const STAGES = ["audio", "visual", "compose"];
const STAGE_LABEL = {
  audio: "Speech synthesis",
  visual: "Animating the portrait",
  compose: "Encoding the MP4",
};
const $ = (id) => document.getElementById(id);

let source = null;      // the EventSource of the job being watched
let pollTimer = null;   // polling fallback when the event stream cannot be used
let current = null;     // id of the job shown in the progress card
const avatarCache = new Map();  // uploaded files -> avatar id, so a resubmit does not re-upload
const mediaCache = new Map();   // uploaded background images and music -> "media:<id>"

class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options = {}) {
  let resp;
  try {
    resp = await fetch(path, options);
  } catch (err) {
    throw new ApiError(`cannot reach the JayAvatar server (${err.message}); is it running?`, 0, "network");
  }
  const isJson = (resp.headers.get("content-type") || "").includes("application/json");
  const body = isJson ? await resp.json().catch(() => null) : null;
  if (!resp.ok) {
    const message = body && body.message ? body.message : `${resp.status} ${resp.statusText}`;
    if (resp.status === 401 && path !== "/v1/session") showLogin();
    throw new ApiError(message, resp.status, body && body.error);
  }
  return body;
}

// With API_TOKEN set the server asks for the token once; POST /v1/session turns it into an
// HttpOnly cookie, which fetch, <video src> and EventSource all send. A link may carry the
// token as #token=... (never sent to the server in the URL; removed from the address bar).
function showLogin() {
  $("login").hidden = false;
  $("token").focus();
}

async function logIn(token) {
  await api("/v1/session", { method: "POST", headers: { Authorization: `Bearer ${token}` } });
  $("login").hidden = true;
  $("login-error").hidden = true;
  $("token").value = "";
  clearError();
  loadJobs();
}

async function submitLogin(event) {
  event.preventDefault();
  try {
    await logIn($("token").value.trim());
  } catch (err) {
    submitLoginError(err);
  }
}

function tokenFromLink() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, "", location.pathname + location.search);
  return decodeURIComponent(match[1]);
}

function showError(title, err) {
  if (err instanceof ApiError && err.status === 401) return;  // the token form says it
  $("error-title").textContent = title;
  $("error-message").textContent = err instanceof Error ? err.message : String(err);
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

function fileKey(file) {
  return file ? `${file.name}:${file.size}:${file.lastModified}` : "-";
}

async function avatarFor(portrait, voice) {
  const key = `${fileKey(portrait)}|${fileKey(voice)}`;
  if (avatarCache.has(key)) return avatarCache.get(key);
  const form = new FormData();
  form.append("portrait", portrait);
  if (voice) form.append("voice_sample", voice);
  const avatar = await api("/v1/avatars", { method: "POST", body: form });
  avatarCache.set(key, avatar.id);
  // The analysed photo: every face boxed and numbered, the one that will speak in green.
  $("preview").src = `/v1/avatars/${avatar.id}/thumbnail`;
  $("preview").hidden = false;
  $("faces").textContent = (avatar.notes || []).join(" ");
  $("faces").hidden = !(avatar.notes || []).length;
  return avatar.id;
}

async function mediaFor(file, kind) {
  const key = `${kind}|${fileKey(file)}`;
  if (mediaCache.has(key)) return mediaCache.get(key);
  const form = new FormData();
  form.append("kind", kind);
  form.append("file", file);
  const media = await api("/v1/media", { method: "POST", body: form });
  mediaCache.set(key, media.ref);
  return media.ref;
}

// The compose options of the form, uploading a chosen background image or music first.
async function composeOptions() {
  const options = { captions: $("captions").value };
  const background = $("background").value;
  if (background === "colour") options.background = $("colour").value;
  if (background === "image") {
    const image = $("bg-image").files[0];
    if (!image) throw new ApiError("choose the background image, or another background.", 0, "no_image");
    options.background = await mediaFor(image, "image");
  }
  const music = $("music").files[0];
  if (music) options.music = await mediaFor(music, "audio");
  return options;
}

function showBackgroundFields() {
  $("colour-field").hidden = $("background").value !== "colour";
  $("bg-image-field").hidden = $("background").value !== "image";
}

async function submit(event) {
  event.preventDefault();
  clearError();
  const portrait = $("portrait").files[0];
  const voice = $("voice").files[0];
  const recording = $("recording").files[0];
  const text = $("text").value.trim();
  if (!portrait) return showError("Choose a portrait", "pick a photo of one face first.");
  if (!text && !recording) {
    return showError("Type some text", "the text box is empty; type the words to speak, or choose a recording.");
  }
  const button = $("submit");
  button.disabled = true;
  let step = "Could not upload the portrait";
  try {
    button.textContent = "Checking the photo\u2026";
    const avatarId = await avatarFor(portrait, voice);
    step = "Could not upload the background or music";
    button.textContent = "Uploading\u2026";
    const options = await composeOptions();
    if (recording) {
      step = "Could not upload the recording";
      options.audio = await mediaFor(recording, "speech");
    }
    step = "Could not start the job";
    button.textContent = "Submitting\u2026";
    const job = await api("/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        avatar_id: avatarId, text, voice: recording ? "auto" : $("voice-engine").value,
        fps: Number($("fps").value), size: Number($("size").value),
        aspect: $("aspect").value, framing: $("framing").value, ...options,
      }),
    });
    watch(job.id);
    loadJobs();
  } catch (err) {
    showError(step, err);
  } finally {
    button.disabled = false;
    button.textContent = "Make video";
  }
}

function stopWatching() {
  window.jayavatarWatch.stop();
  if (source) source.close();
  if (pollTimer) clearTimeout(pollTimer);
  source = null;
  pollTimer = null;
}

function watch(jobId) {
  stopWatching();
  current = null;  // the reset below must not touch the job list
  $("idle").hidden = true;
  $("job-view").hidden = false;
  $("job-id").textContent = jobId;
  $("job-error").hidden = true;
  $("result").hidden = true;
  $("player").removeAttribute("src");
  $("player").load();
  render({ status: "queued", stage: "audio", progress: 0 });
  current = jobId;

  const es = new EventSource(`/v1/jobs/${jobId}/events`);
  source = es;
  const onEvent = (ev) => {
    if (current !== jobId) return;
    const data = JSON.parse(ev.data);
    render(data);
    if (ev.type === "snapshot") watchStream(jobId, data.status);
    if (data.status && TERMINAL.has(data.status)) {
      es.close();
      finish(jobId, data);
    }
  };
  for (const name of ["snapshot", "state", "progress"]) es.addEventListener(name, onEvent);
  es.onerror = () => {
    // The browser reconnects by itself (with Last-Event-ID) unless the server refused the stream.
    if (es.readyState === EventSource.CLOSED && current === jobId && source === es) poll(jobId);
  };
}

async function poll(jobId) {
  if (current !== jobId) return;
  try {
    const job = await api(`/v1/jobs/${jobId}`);
    render(job);
    watchStream(jobId, job.status);
    if (TERMINAL.has(job.status)) return finish(jobId, job);
  } catch (err) {
    showError("Could not read the job", err);
    if (err.status === 404) return;
  }
  pollTimer = setTimeout(() => poll(jobId), 1000);
}

const lastStatus = { status: "queued", stage: "audio" };

function render(data) {
  if (data.status) lastStatus.status = data.status;
  if (data.stage) lastStatus.stage = data.stage;
  const { status, stage } = lastStatus;
  const pct = Math.round((data.progress || 0) * 100);
  $("bar-fill").style.width = `${pct}%`;
  $("bar").setAttribute("aria-valuenow", String(pct));
  $("bar").className = `bar ${status}`;
  $("percent").textContent = `${pct}%`;
  const badge = $("job-status");
  badge.textContent = status;
  badge.className = `badge ${status}`;
  $("cancel").hidden = TERMINAL.has(status);

  let label = STAGE_LABEL[stage] || stage;
  if (status === "queued" || data.stage_state === "queued") label += " \u2013 waiting for a worker";
  if (data.stage_state === "retry_wait") label += " \u2013 retrying soon";
  if (data.attempt > 1) label += ` (attempt ${data.attempt})`;
  if (status === "succeeded") label = "Done";
  if (status === "failed") label = `Failed during ${STAGE_LABEL[stage] || stage}`;
  if (status === "canceled") label = "Canceled";
  $("stage-label").textContent = label;

  const row = current && $("jobs").querySelector(`tbody tr[data-id="${current}"]`);
  if (row) {  // keep the list's row for this job in step with the progress card
    row.cells[2].firstChild.textContent = status;
    row.cells[2].firstChild.className = `badge ${status}`;
    row.cells[3].textContent = `${pct}%`;
  }

  const at = STAGES.indexOf(stage);
  for (const li of $("steps").children) {
    const i = STAGES.indexOf(li.dataset.stage);
    li.className = status === "succeeded" || i < at ? "done"
      : i === at ? (status === "failed" || status === "canceled" ? "failed" : "active") : "";
  }
}

// A link to the captions file, for jobs made with captions (the events do not say).
async function showCaptionsLink(jobId) {
  try {
    const job = await api(`/v1/jobs/${jobId}`);
    const link = $("download-captions");
    if (current !== jobId || !job.captions_url) return;
    link.href = job.captions_url;
    link.setAttribute("download", `jayavatar-${jobId.slice(0, 8)}.srt`);
    link.hidden = false;
  } catch (err) {
    showError("Could not read the job", err);
  }
}

// Play the job while it renders (static/watch.js), once per job shown, if it is not done.
function watchStream(jobId, status) {
  const state = window.jayavatarWatch.state;
  if (!TERMINAL.has(status) && state.job !== jobId) window.jayavatarWatch.start(jobId);
}

function finish(jobId, data) {
  if (source) source.close();
  if (pollTimer) clearTimeout(pollTimer);
  source = null;
  pollTimer = null;
  if (data.status === "succeeded") {
    const url = `/v1/jobs/${jobId}/result`;
    // The result replaces the watched video once that has played to its end.
    $("player").hidden = true;
    window.jayavatarWatch.finish(jobId, () => {
      if (current === jobId) $("player").hidden = false;
    });
    $("player").src = url;
    $("download").href = url;
    $("download").setAttribute("download", `jayavatar-${jobId.slice(0, 8)}.mp4`);
    $("download-captions").hidden = true;
    showCaptionsLink(jobId);
    $("result").hidden = false;
  } else if (data.error) {
    $("job-error").textContent = data.error;
    $("job-error").hidden = false;
  }
  loadJobs();
}

async function cancel() {
  if (!current) return;
  try {
    render(await api(`/v1/jobs/${current}/cancel`, { method: "POST" }));
  } catch (err) {
    showError("Could not cancel the job", err);
  }
}

function when(seconds) {
  const d = new Date(seconds * 1000);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

async function loadJobs() {
  let jobs;
  try {
    jobs = await api("/v1/jobs?limit=10");
  } catch (err) {
    return showError("Could not list jobs", err);
  }
  const body = $("jobs").tBodies[0];
  body.replaceChildren();
  $("no-jobs").hidden = jobs.length > 0;
  $("jobs").hidden = jobs.length === 0;
  for (const job of jobs) {
    const row = body.insertRow();
    row.dataset.id = job.id;
    const said = job.text || (job.options.audio ? `(recording ${job.options.audio})` : "");
    const cells = [when(job.created_at), said, "", `${Math.round(job.progress * 100)}%`, ""];
    cells.forEach((value) => { row.insertCell().textContent = value; });
    row.cells[0].className = "when";
    row.cells[1].className = "text";
    row.cells[1].title = said;
    const badge = document.createElement("span");
    badge.className = `badge ${job.status}`;
    badge.textContent = job.status;
    if (job.error) badge.title = job.error;
    row.cells[2].append(badge);
    row.cells[4].className = "actions";
    const open = document.createElement("button");
    open.type = "button";
    open.className = "link";
    open.textContent = job.status === "succeeded" ? "Play" : TERMINAL.has(job.status) ? "Details" : "Follow";
    open.addEventListener("click", () => watch(job.id));
    row.cells[4].append(open);
  }
}

// A recording replaces the voice: the text box then holds its (optional) transcript.
function showRecording() {
  const file = $("recording").files[0];
  $("recording-hint").textContent = file ? file.name : "or drop an audio file here";
  $("recording-clear").hidden = !file;
  $("voice-engine").disabled = Boolean(file);
  $("text-label").textContent = file ? "Transcript of the recording (optional)" : "Text to say";
}

function dropRecording(event) {
  event.preventDefault();
  $("recording-drop").classList.remove("over");
  const files = event.dataTransfer && event.dataTransfer.files;
  if (!files || !files.length) return;
  $("recording").files = files;
  showRecording();
}

function previewPortrait() {
  const file = $("portrait").files[0];
  const img = $("preview");
  if (img.src) URL.revokeObjectURL(img.src);
  img.removeAttribute("src");
  img.hidden = true;
  if (!file) return;
  img.onload = () => { img.hidden = false; };
  img.onerror = () => { img.hidden = true; };  // not an image the browser can show
  img.src = URL.createObjectURL(file);
}

document.addEventListener("DOMContentLoaded", () => {
  $("make").addEventListener("submit", submit);
  $("portrait").addEventListener("change", previewPortrait);
  $("background").addEventListener("change", showBackgroundFields);
  $("recording").addEventListener("change", showRecording);
  $("recording-clear").addEventListener("click", () => { $("recording").value = ""; showRecording(); });
  const drop = $("recording-drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", dropRecording);
  $("text").addEventListener("input", () => {
    $("count").textContent = `${$("text").value.length} / 5000`;
  });
  $("cancel").addEventListener("click", cancel);
  $("refresh").addEventListener("click", loadJobs);
  $("error-close").addEventListener("click", clearError);
  $("login").addEventListener("submit", submitLogin);
  const token = tokenFromLink();
  if (token) logIn(token).catch((err) => { showLogin(); submitLoginError(err); });
  else loadJobs();
});

function submitLoginError(err) {
  $("login-error").textContent = err.message;
  $("login-error").hidden = false;
}
