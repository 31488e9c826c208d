"""Every Redis key JayAvatar uses, in one place (the rq queues are in shared/pipeline.py)."""

from __future__ import annotations

from typing import Any

PREFIX = "ja"


def text(value: Any) -> str:
    """A Redis reply as str: connections here do not decode, so replies arrive as bytes."""
    return value.decode() if isinstance(value, bytes) else str(value)


ACTIVE_JOBS = f"{PREFIX}:jobs:active"  # set of non-terminal job ids (the reconciler's work list)
ALL_JOBS = f"{PREFIX}:jobs:all"  # sorted set: job id -> created_at
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
STATUS_INDEX_READY = f"{PREFIX}:jobs:status-index"  # set once every job is in its status set
AVATARS = f"{PREFIX}:avatars"  # sorted set: avatar id -> created_at
RECONCILER_LOCK = f"{PREFIX}:reconciler:lock"


def job(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def lease(job_id: str, stage: str) -> str:
    """The lease of the one execution running `stage` of the job (stages may overlap)."""
    return f"{PREFIX}:lease:{job_id}:{stage}"


def pieces(job_id: str, stage: str) -> str:
    """Stream: one entry per piece the stage publishes (a doorbell; shared/pieces.py)."""
    return f"{PREFIX}:pieces:{job_id}:{stage}"


def short_jobs(client: str) -> str:
    """Sorted set: id -> created_at of a client's unfinished short-lane jobs (shared/lanes.py)."""
    return f"{PREFIX}:lane:short:{client}"


def jobs_with_status(status: str) -> str:
    """Sorted set: id -> created_at of the jobs with this status (kept by shared/jobs.py)."""
    return f"{PREFIX}:jobs:status:{status}"


def idempotency(key: str, scope: str | None = None) -> str:
    """An Idempotency-Key, per client scope (a hash of the API token, or "global")."""
    return f"{PREFIX}:idem:{scope or 'global'}:{key}"


def avatar(avatar_id: str) -> str:
    return f"{PREFIX}:avatar:{avatar_id}"


def events(job_id: str) -> str:
    return f"{PREFIX}:events:{job_id}"


def workers(stage: str) -> str:
    """Sorted set: the name of a worker of a batch stage -> its last beat (shared/presence.py)."""
    return f"{PREFIX}:workers:{stage}"


def rq_job_id(job_id: str, stage: str, attempt: int) -> str:
    return f"{job_id}-{stage}-{attempt}"


# ---- live sessions (shared/live.py) -------------------------------------------------------

LIVE_SESSIONS = f"{PREFIX}:live:sessions"  # sorted set: session id -> created_at
LIVE_ROLES = ("audio", "visual")


def live_session(session_id: str) -> str:
    """The session's record (JSON, shared/live.py `SessionRecord`)."""
    return f"{PREFIX}:live:session:{session_id}"


def live_ctl(session_id: str) -> str:
    """Stream of client commands: type=say|stop|close|keyframe|audio.start (+ text, id, ...)."""
    return f"{PREFIX}:live:{session_id}:ctl"


def live_audio_in(session_id: str) -> str:
    """Stream of the PCM of the client's audio lines (kind=pcm|end), read by live-audio, which
    trims what it has forwarded."""
    return f"{PREFIX}:live:{session_id}:audio_in"


def live_speech(session_id: str) -> str:
    """Stream of speech pieces from live-audio: one per sentence (kind=piece) or per piece of
    an audio line as it arrives (kind=audio)."""
    return f"{PREFIX}:live:{session_id}:speech"


def live_out(session_id: str) -> str:
    """Stream of what the client gets: kind=init|frag|event, in stream order."""
    return f"{PREFIX}:live:{session_id}:out"


def live_init(session_id: str) -> str:
    """Hash: the current stream's init segment and its ready fields (mime, width, ...)."""
    return f"{PREFIX}:live:{session_id}:init"


def live_lease(session_id: str, role: str) -> str:
    """The lease of the one live worker of `role` serving the session (shared/leases.py)."""
    return f"{PREFIX}:live:{session_id}:lease:{role}"


def live_position(session_id: str, role: str) -> str:
    """The last stream entry a role has consumed, so a worker taking over resumes after it
    (`role` is also "audio_in": live-audio's place in the audio_in stream)."""
    return f"{PREFIX}:live:{session_id}:pos:{role}"


def live_clock(session_id: str) -> str:
    """The wall time (UNIX seconds) of media time 0: a new encoder continues the timeline."""
    return f"{PREFIX}:live:{session_id}:clock"


def live_viewers(session_id: str) -> str:
    """Sorted set: the session's open sockets (a viewer id each) -> last renewed (UNIX seconds),
    kept by the orchestrator (orchestrator/viewers.py)."""
    return f"{PREFIX}:live:{session_id}:viewers"


def live_session_keys(session_id: str) -> list[str]:
    """Every key of one session, its record first."""
    return [live_session(session_id), live_ctl(session_id), live_speech(session_id),
            live_out(session_id), live_clock(session_id), live_init(session_id),
            live_audio_in(session_id), live_viewers(session_id),
            *(live_lease(session_id, r) for r in LIVE_ROLES),
            *(live_position(session_id, r) for r in (*LIVE_ROLES, "audio_in"))]


def live_workers(role: str) -> str:
    """Sorted set: live worker name -> its last beat (shared/presence.py)."""
    return f"{PREFIX}:live:workers:{role}"


def live_slots(role: str) -> str:
    """Hash: live worker name -> how many sessions it serves at once (its slots)."""
    return f"{PREFIX}:live:slots:{role}"


def live_client_sockets(client: str) -> str:
    """Sorted set: the live sockets ("<session>:<viewer>") a client address holds -> renewed
    (orchestrator/viewers.py)."""
    return f"{PREFIX}:live:client:{client}"


def login(cookie_hash: str) -> str:
    """A web login cookie (by the sha256 of its value) -> the fingerprint of its API token."""
    return f"{PREFIX}:login:{cookie_hash}"


def login_failures(client: str) -> str:
    """Wrong tokens from a client address in the current window (expires with the window)."""
    return f"{PREFIX}:login:failures:{client}"
