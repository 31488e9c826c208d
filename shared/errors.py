"""One exception tree for every JayAvatar process.

    JayAvatarError         every one carries a `code` (a short snake_case name) and a sentence
     +-- InvalidInput      permanent: the user's input is wrong (a request is refused, a job fails)
     |    +-- Malformed       the request itself is malformed (a file name that looks like a path)
     |    +-- NotFound        it names something that is not here (an avatar, an upload)
     |    +-- Conflict        it does not fit the current state (a finished job, a damaged record)
     |    +-- TooLarge        a file or picture is larger than accepted
     |    +-- Unsupported     a file of a kind that is not accepted (not an image, not audio)
     +-- StageFailed       permanent: a stage cannot produce its output (job fails at once)
     |    +-- MissingWeights   an explicitly requested engine has no model files
     +-- TransientError    worth retrying with backoff (lost Redis, busy disk, killed ffmpeg)
     |    +-- DiskFull         DATA_DIR has too little free space; retried once space returns
     |    +-- Busy             at capacity, or no worker to serve it; retry after `retry_after` s
     +-- Canceled          the job was canceled while a stage ran
     +-- LeaseLost         this execution no longer owns its stage; it must not publish
     +-- ConfigError       settings are invalid at start-up; names the variable

Messages say what was received and what was expected, in a sentence a person can act on. The
API answers each refusal with its class's HTTP status (orchestrator/api/errors.py holds the
table), its `code` and its sentence.
"""

from __future__ import annotations


class JayAvatarError(Exception):
    """Root of every error JayAvatar raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(JayAvatarError):
    """The input cannot be used; retrying will not help."""

    code = "invalid_input"


class Malformed(InvalidInput):
    """The request itself is malformed, whatever it asks for."""

    code = "malformed"


class NotFound(InvalidInput):
    """The input names something that is not stored here."""

    code = "not_found"


class Conflict(InvalidInput):
    """The input does not fit the current state of what it names."""

    code = "conflict"


class TooLarge(InvalidInput):
    """A file or picture is larger than accepted."""

    code = "too_large"


class Unsupported(InvalidInput):
    """A file is of a kind that is not accepted."""

    code = "unsupported"


class StageFailed(JayAvatarError):
    """A stage cannot produce its output; retrying will not help."""


class MissingWeights(StageFailed):
    """An explicitly requested engine has no model files on disk."""


class TransientError(JayAvatarError):
    """A temporary failure; the stage is retried with backoff."""


class DiskFull(TransientError):
    """DATA_DIR is (nearly) full: new work is refused and stages wait until space returns."""


class Busy(TransientError):
    """Nothing can take the request now (at capacity, or no worker running); worth asking
    again after `retry_after` seconds (None: no estimate)."""

    code = "busy"

    def __init__(self, message: str, *, code: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class Canceled(JayAvatarError):
    """The job was canceled while its stage was running."""


class LeaseLost(JayAvatarError):
    """This execution lost its lease; another one owns the stage now."""


class ConfigError(JayAvatarError):
    """A setting is missing or invalid."""
