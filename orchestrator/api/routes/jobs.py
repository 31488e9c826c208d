"""/v1/jobs: submit, inspect, list, cancel, download."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import FileResponse

from orchestrator import engines
from orchestrator.api.deps import AppState, state
from orchestrator.api.errors import ApiError
from orchestrator.avatars import parse_avatar
from orchestrator.schemas import JobAccepted, JobCreate, JobPublic
from shared import keys, lanes, spoken_text, textcheck
from shared.checkpoint import load_manifest
from shared.errors import Conflict, InvalidInput, Malformed, NotFound
from shared.models import (
    LANGUAGE_PATTERN,
    MEDIA_REF_PATTERN,
    MIN_FACE_PX,
    AvatarRecord,
    JobOptions,
    JobRecord,
    frame_size,
    original_face_width,
)
from shared.pipeline import CAPTIONS, RESULT

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_IDEM = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_COLOUR = re.compile(r"^#[0-9a-f]{6}$")
STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
AVATAR_CACHE_S = 2.0


def _get(st: AppState, job_id: str) -> JobRecord:
    rec = st.store.get(job_id) if re.fullmatch(r"[0-9a-f]{1,64}", job_id) else None
    if rec is None:
        raise NotFound(f"no job with id {job_id[:64]!r}", code="job_not_found")
    return rec


@router.post("", status_code=202, response_model=JobAccepted)
def create_job(body: JobCreate, request: Request, response: Response,
               st: Annotated[AppState, Depends(state)],
               idempotency_key: Annotated[str | None, Header()] = None) -> JobAccepted:
    """202 only after the job's MULTI/EXEC (appendfsync always); its job.json mirror is written
    in the background (shared/mirror.py), and its avatar read at most every AVATAR_CACHE_S."""
    if idempotency_key is not None and not _IDEM.match(idempotency_key):
        raise Malformed("the Idempotency-Key header must be 1-128 characters of letters, digits, "
                        "'_', '.', ':' or '-'", code="bad_idempotency_key")
    audio, language = _recording(body, st)
    # a text job's words, or a recording's transcript when one came with it
    text = (_checked_text(body.text, st.settings.max_text_chars)
            if audio is None or body.text.strip() else "")
    avatar = _avatar(st, body.avatar_id)
    if avatar is None:
        raise NotFound(f"no avatar with id {body.avatar_id!r}; create one with POST /v1/avatars",
                       code="avatar_not_found")
    chosen, notes = engines.choose(body.voice, body.renderer, st.settings.models_dir, avatar,
                                   recording=audio is not None)
    if audio is None:
        if not any(ch.isalnum() for ch in spoken_text.strip_tags(text)[0]):
            raise InvalidInput("the text is only SSML-like tags, which are not "
                               "spoken; write the words to say", code="nothing_to_say")
        notes += spoken_text.notes(text)  # tags left unspoken, languages the voice cannot speak
    else:
        notes.append(mouth_note(bool(text), language, body.captions))
    if body.framing == "original":
        frame = frame_size(body.size, body.aspect)
        width = original_face_width(avatar.face_box[2], (avatar.width, avatar.height), frame)
        if width < MIN_FACE_PX:
            raise InvalidInput(f"with framing 'original' the face would be {width:.0f} px wide in "
                               f"the {frame[0]}x{frame[1]} video; it needs at least {MIN_FACE_PX} "
                               "px: use framing 'face', a larger size, or a closer photo",
                               code="face_too_small")
    background, music = _compose_media(body, st)
    options = JobOptions(voice=body.voice, renderer=body.renderer, fps=body.fps,
                         size=body.size, seed=body.seed, speed=body.speed,
                         aspect=body.aspect, framing=body.framing, background=background,
                         music=music, music_volume=body.music_volume, captions=body.captions,
                         crf=body.crf, audio=audio, language=language, normalize=body.normalize,
                         emotion=body.emotion, intensity=body.intensity)
    request_hash = hashlib.sha256(json.dumps(body.model_dump(mode="json"),
                                             sort_keys=True).encode()).hexdigest()
    recording_s = st.media.require(audio, "speech", "audio").duration if audio else None
    rec = JobRecord(id=uuid.uuid4().hex, avatar_id=body.avatar_id, text=text, options=options,
                    idempotency_key=idempotency_key, engines=chosen, notes=notes,
                    idempotency_scope=_idempotency_scope(request, st), request_hash=request_hash,
                    cost_s=lanes.cost_s(options, chosen.get("visual"), text=text,
                                        recording_s=recording_s))
    rec, created = st.store.create(rec, mirror=False)
    if created:
        st.mirrors.submit(rec)
    if not created and rec.request_hash not in (None, request_hash):
        raise InvalidInput(f"the Idempotency-Key {idempotency_key!r} was already used for job "
                           f"{rec.id} with a different request; use a new key for a new request "
                           "(keys are kept "
                           f"{st.settings.idempotency_ttl_s / 3600:g} h)",
                           code="idempotency_key_reused")
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/jobs/{rec.id}"
    return JobAccepted(id=rec.id, status=rec.status, status_url=f"/v1/jobs/{rec.id}")


def _avatar(st: AppState, avatar_id: str) -> AvatarRecord | None:
    """The avatar, read from Redis at most every AVATAR_CACHE_S per process: a submission then
    costs one Redis round trip (its transaction). An avatar deleted in the last seconds may
    still be accepted; its job then fails with a message saying the avatar is gone."""
    now = time.monotonic()
    hit = st.avatar_cache.get(avatar_id)
    if hit is not None and now - hit[0] < AVATAR_CACHE_S:
        return hit[1]
    raw = st.conn.get(keys.avatar(avatar_id))
    if not raw:
        st.avatar_cache.pop(avatar_id, None)
        return None
    avatar = parse_avatar(avatar_id, raw)  # 409 if its record is damaged
    if len(st.avatar_cache) >= 1000:
        st.avatar_cache.clear()
    st.avatar_cache[avatar_id] = (now, avatar)
    return avatar


def _checked_text(raw: str, limit: int) -> str:
    """The text to speak, stripped; 422 if it is not valid text, empty, too long or wordless."""
    problem = textcheck.problem(raw)
    if problem:
        raise InvalidInput(f"the text cannot be spoken: {problem}", code="bad_text")
    text = raw.strip()
    if not text:
        raise InvalidInput("the text is empty; send the words to speak", code="empty_text")
    if len(text) > limit:
        raise InvalidInput(f"the text has {len(text)} characters; the limit is {limit} "
                           "(split it into several jobs)", code="text_too_long")
    if not any(ch.isalnum() for ch in text):
        raise InvalidInput("the text has no letters or digits to speak", code="nothing_to_say")
    return text


def _recording(body: JobCreate, st: AppState) -> tuple[str | None, str]:
    """The `audio` option (a speech upload's ref, checked) and the recording's language;
    422 for options that do not go with what the job speaks."""
    language = body.language.strip().lower().replace("_", "-")
    if not re.fullmatch(LANGUAGE_PATTERN, language):
        raise InvalidInput(f"language {body.language[:20]!r} is not a language code; send one "
                           "such as 'en', 'en-gb', 'de' or 'pt-br'", code="bad_language")
    if body.audio is None:
        if language != "en":
            raise InvalidInput("'language' describes a recording sent as 'audio'; a text job "
                               "is spoken in the voice's own language: leave 'language' out",
                               code="language_without_audio")
        if body.normalize:
            raise InvalidInput("'normalize' evens out the loudness of a recording sent as "
                               "'audio'; a text job's voice is already even: leave it out",
                               code="normalize_without_audio")
        return None, language
    ref = body.audio.strip().lower()
    if not re.fullmatch(MEDIA_REF_PATTERN, ref):
        raise InvalidInput(f"audio {body.audio[:40]!r} is not understood; upload the recording "
                           "with POST /v1/media (kind=speech) and send its ref 'media:<id>'",
                           code="bad_audio_ref")
    st.media.require(ref, "speech", "audio")
    if body.speed != 1.0:
        raise InvalidInput("'speed' sets a voice's pace; a recording keeps its own: leave "
                           "'speed' out (or 1.0) with 'audio'", code="speed_with_audio")
    if body.captions != "off" and not body.text.strip() and language.split("-")[0] != "en":
        raise InvalidInput(f"captions of a recording in {language!r} need its transcript: send "
                           "the words as 'text', or captions 'off' (words are recognised only "
                           "in English)", code="captions_need_transcript")
    return ref, language


def mouth_note(transcript: bool, language: str, captions: str) -> str:
    """What the job's notes say about how the mouth will follow a recording."""
    if language.split("-")[0] != "en":
        note = (f"the mouth follows the sound of the recording: language {language!r} is not "
                "one the phone recogniser covers (US English)")
    elif transcript:
        note = "the mouth follows the transcript, aligned to the recording"
    else:
        note = ("the mouth follows the phones recognised in the recording (no transcript "
                "given; send 'text' with the recording's words for a closer fit)")
    if captions != "off" and not transcript:
        note += "; captions are the words recognised in it"
    return note


def _idempotency_scope(request: Request, st: AppState) -> str:
    """Whose Idempotency-Keys these are, and whose job (its lane's limit per client): the API
    token's (a hash of it) when the request carries one, else everyone's ("global")."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    secret = given.strip() if scheme.lower() == "bearer" else ""
    secret = secret or st.settings.token or ""  # a session cookie stands for the API token
    if not secret:
        return "global"
    return "token-" + hashlib.sha256(secret.encode()).hexdigest()[:32]


def _compose_media(body: JobCreate, st: AppState) -> tuple[str, str | None]:
    """The background and music options, checked: a known colour form or an upload of the
    right kind. Returns them normalised (colours in lower case)."""
    background = body.background.strip().lower()
    if background.startswith("media:"):
        st.media.require(background, "image", "background")
    elif background != "keep" and not _COLOUR.match(background):
        raise InvalidInput(f"background {body.background[:40]!r} is not understood; send 'keep', a "
                           "colour as '#rrggbb' (e.g. '#1e90ff') or 'media:<id>' of an image "
                           "uploaded with POST /v1/media", code="bad_background")
    if body.music is None:
        return background, None
    music = body.music.strip().lower()
    if not music.startswith("media:"):
        raise InvalidInput(f"music {body.music[:40]!r} is not understood; send 'media:<id>' of "
                           "a track uploaded with POST /v1/media (kind=audio), or leave it out",
                           code="bad_music")
    st.media.require(music, "audio", "music")
    return background, music


@router.get("", response_model=list[JobPublic])
def list_jobs(st: Annotated[AppState, Depends(state)], status: str | None = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[JobPublic]:
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"unknown status {status!r}; expected one of: {', '.join(STATUSES)}",
                           code="bad_status")
    return [JobPublic.of(r) for r in st.store.list(status, limit)]


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, st: Annotated[AppState, Depends(state)]) -> JobPublic:
    return JobPublic.of(_get(st, job_id))


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: str, st: Annotated[AppState, Depends(state)]) -> JobPublic:
    rec = _get(st, job_id)
    if rec.status in ("succeeded", "failed"):
        raise Conflict(f"job {job_id} already {rec.status}; nothing to cancel",
                       code="job_finished")
    rec = st.store.cancel(job_id) or rec
    return JobPublic.of(rec)


def _published(st: AppState, rec: JobRecord, what: str) -> Path:
    """The compose stage's folder of a succeeded job; 409 before that, 410 if it is gone."""
    if rec.status != "succeeded":
        reason = f": {rec.error}" if rec.error else ""
        raise Conflict(f"job {rec.id} is {rec.status}{reason}; the {what} "
                       "exists only once the job has succeeded", code="not_ready")
    layout = st.settings.layout
    folder = layout.stage_dir(rec.id, "compose")  # fetched into the cache from a remote store
    if load_manifest(folder, verify=False, store=layout.store, fetch=True) is None:
        raise ApiError(410, "result_missing",
                       f"job {rec.id} succeeded but its {what} is no longer on disk")
    return folder


@router.get("/{job_id}/result")
def job_result(job_id: str, st: Annotated[AppState, Depends(state)]) -> FileResponse:
    folder = _published(st, _get(st, job_id), "result")
    return FileResponse(folder / RESULT, media_type="video/mp4",
                        filename=f"jayavatar-{job_id[:8]}.mp4")


@router.get("/{job_id}/captions")
def job_captions(job_id: str, st: Annotated[AppState, Depends(state)]) -> FileResponse:
    """The captions as SubRip, for jobs submitted with captions 'srt' or 'burn'."""
    rec = _get(st, job_id)
    if rec.options.captions == "off":
        raise NotFound(f"job {job_id} was made without captions; submit "
                       "it again with \"captions\": \"srt\" (or \"burn\")", code="no_captions")
    folder = _published(st, rec, "captions file")
    if not (folder / CAPTIONS).is_file() and rec.options.audio and not rec.text:
        raise NotFound(f"job {job_id} has no captions: no words were recognised in its "
                       "recording; submit it again with the transcript as 'text'",
                       code="no_captions")
    if not (folder / CAPTIONS).is_file():
        raise ApiError(410, "result_missing", f"job {job_id} has no {CAPTIONS} on disk")
    return FileResponse(folder / CAPTIONS, media_type="application/x-subrip",
                        filename=f"jayavatar-{job_id[:8]}.srt")
