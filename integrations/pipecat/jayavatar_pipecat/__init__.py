"""JayAvatar for Pipecat: a self-hosted talking head, made from one photo, as the face of a
voice agent (`JayAvatarVideoService`)."""

from jayavatar_pipecat.api import JayAvatarAPI, JayAvatarError, LiveSession
from jayavatar_pipecat.video import JayAvatarVideoService

__all__ = ["JayAvatarAPI", "JayAvatarError", "JayAvatarVideoService", "LiveSession"]
