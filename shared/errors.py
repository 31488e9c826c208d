"""One exception tree for every JayAvatar process.

    JayAvatarError
     +-- InvalidInput      permanent: the user's input is wrong (HTTP 4xx, job fails at once)
     +-- StageFailed       permanent: a stage cannot produce its output (job fails at once)
     |    +-- MissingWeights   an explicitly requested engine has no model files
     +-- TransientError    worth retrying with backoff (lost Redis, busy disk, killed ffmpeg)
     |    +-- DiskFull         DATA_DIR has too little free space; retried once space returns
     +-- Canceled          the job was canceled while a stage ran
     +-- LeaseLost         this execution no longer owns its stage; it must not publish
     +-- ConfigError       settings are invalid at start-up; names the variable

Messages say what was received and what was expected, in a sentence a person can act on.
"""

from __future__ import annotations


class JayAvatarError(Exception):
    """Root of every error JayAvatar raises on purpose."""


class InvalidInput(JayAvatarError):
    """The input cannot be used; retrying will not help."""


class StageFailed(JayAvatarError):
    """A stage cannot produce its output; retrying will not help."""


class MissingWeights(StageFailed):
    """An explicitly requested engine has no model files on disk."""


class TransientError(JayAvatarError):
    """A temporary failure; the stage is retried with backoff."""


class DiskFull(TransientError):
    """DATA_DIR is (nearly) full: new work is refused and stages wait until space returns."""


class Canceled(JayAvatarError):
    """The job was canceled while its stage was running."""


class LeaseLost(JayAvatarError):
    """This execution lost its lease; another one owns the stage now."""


class ConfigError(JayAvatarError):
    """A setting is missing or invalid."""
