"""/v1/media: upload a background image or a music track once, name it in many jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile
from fastapi.responses import FileResponse

from orchestrator.api.deps import AppState, state
from orchestrator.schemas import MediaPublic
from shared.errors import NotFound
from shared.models import MediaRecord

router = APIRouter(prefix="/v1/media", tags=["media"])

MEDIA_TYPES = {"image": "image/png", "audio": "audio/flac", "speech": "audio/flac"}


def _get(st: AppState, media_id: str) -> MediaRecord:
    rec = st.media.get(media_id)
    if rec is None:
        raise NotFound(f"no uploaded media with id {media_id[:64]!r}", code="media_not_found")
    return rec


@router.post("", status_code=201, response_model=MediaPublic)
async def upload_media(
    st: Annotated[AppState, Depends(state)],
    file: Annotated[UploadFile, File(description="the image or audio file")],
    kind: Annotated[str, Form(description="'image' (a background), 'audio' (music) or "
                                          "'speech' (a recording for a job to animate)")],
    name: Annotated[str | None, Form(max_length=200)] = None,
) -> MediaPublic:
    return MediaPublic.of(await st.media.create(file, kind.strip().lower(), name))


@router.get("", response_model=list[MediaPublic])
def list_media(st: Annotated[AppState, Depends(state)]) -> list[MediaPublic]:
    return [MediaPublic.of(r) for r in st.media.list()]


@router.get("/{media_id}", response_model=MediaPublic)
def get_media(media_id: str, st: Annotated[AppState, Depends(state)]) -> MediaPublic:
    return MediaPublic.of(_get(st, media_id))


@router.get("/{media_id}/file")
def get_media_file(media_id: str, st: Annotated[AppState, Depends(state)]) -> FileResponse:
    """The stored (normalised) file: PNG for images, FLAC for music and speech."""
    rec = _get(st, media_id)
    return FileResponse(st.media.file(rec), media_type=MEDIA_TYPES[rec.kind])


@router.delete("/{media_id}", status_code=204)
def delete_media(media_id: str, st: Annotated[AppState, Depends(state)]) -> Response:
    _get(st, media_id)
    st.media.delete(media_id)
    return Response(status_code=204)
