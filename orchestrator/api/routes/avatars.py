"""/v1/avatars: upload a portrait (+ voice sample) once, reuse it for many jobs."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile
from fastapi.responses import FileResponse

from orchestrator.api.deps import AppState, state
from orchestrator.schemas import AvatarPublic
from shared.errors import NotFound
from shared.models import AvatarRecord

router = APIRouter(prefix="/v1/avatars", tags=["avatars"])


def _get(st: AppState, avatar_id: str) -> AvatarRecord:
    rec = st.avatars.get(avatar_id) if re.fullmatch(r"[0-9a-f]{1,64}", avatar_id) else None
    if rec is None:
        raise NotFound(f"no avatar with id {avatar_id[:64]!r}", code="avatar_not_found")
    return rec


@router.post("", status_code=201, response_model=AvatarPublic)
async def create_avatar(
    st: Annotated[AppState, Depends(state)],
    portrait: Annotated[UploadFile, File(description="a PNG, JPEG, WebP or BMP photo")],
    voice_sample: Annotated[UploadFile | None, File(description="3-30 s of speech")] = None,
    name: Annotated[str | None, Form(max_length=200)] = None,
    face: Annotated[int | None, Form(ge=0, le=99, description=(
        "which face to animate when the photo has several: 0 is the largest"))] = None,
) -> AvatarPublic:
    """Waits for the face analysis without holding a thread; 503 with Retry-After when
    MAX_PENDING_AVATARS uploads are already in progress."""
    record, notes = await st.avatars.create(portrait, voice_sample, name, face)
    return AvatarPublic(**record.model_dump(), notes=notes)


@router.get("", response_model=list[AvatarRecord])
def list_avatars(st: Annotated[AppState, Depends(state)]) -> list[AvatarRecord]:
    return st.avatars.list()


@router.get("/{avatar_id}", response_model=AvatarRecord)
def get_avatar(avatar_id: str, st: Annotated[AppState, Depends(state)]) -> AvatarRecord:
    return _get(st, avatar_id)


@router.get("/{avatar_id}/portrait")
def get_portrait(avatar_id: str, st: Annotated[AppState, Depends(state)]) -> FileResponse:
    _get(st, avatar_id)
    path = st.settings.layout.portrait(avatar_id)
    return FileResponse(st.settings.layout.store.fetch(path) or path, media_type="image/png")


@router.get("/{avatar_id}/thumbnail", responses={200: {"content": {"image/jpeg": {}}}})
def get_thumbnail(avatar_id: str, st: Annotated[AppState, Depends(state)]) -> FileResponse:
    """A small JPEG of the portrait with every face found boxed and numbered, the animated one
    in green."""
    _get(st, avatar_id)
    path = st.settings.layout.thumbnail(avatar_id)
    if st.settings.layout.store.fetch(path) is None:
        raise NotFound(f"avatar {avatar_id} has no thumbnail (it was made by an older version); "
                       "upload the portrait again to get one", code="thumbnail_missing")
    return FileResponse(path, media_type="image/jpeg")


@router.delete("/{avatar_id}", status_code=204)
def delete_avatar(avatar_id: str, st: Annotated[AppState, Depends(state)]) -> Response:
    """Also for an avatar whose stored record is damaged: deleting it is how it goes."""
    if not re.fullmatch(r"[0-9a-f]{1,64}", avatar_id) or not st.avatars.delete(avatar_id):
        raise NotFound(f"no avatar with id {avatar_id[:64]!r}", code="avatar_not_found")
    return Response(status_code=204)
