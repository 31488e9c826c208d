"""The domain refuses with shared.errors kinds; the API answers each with its status, the error's
code and sentence as `{error, message}`, and Retry-After when a Busy error knows when."""

from __future__ import annotations

import warnings

import pytest
from fastapi import FastAPI

with warnings.catch_warnings():  # starlette 1.x would rather have httpx2; httpx works the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from orchestrator.api import errors
from shared.errors import (
    Busy,
    Conflict,
    InvalidInput,
    JayAvatarError,
    Malformed,
    NotFound,
    StageFailed,
    TooLarge,
    Unsupported,
)

CASES: list[tuple[JayAvatarError, int, dict[str, str] | None]] = [
    (Malformed("the file name looks like a path", code="bad_file_name"), 400, None),
    (NotFound("no avatar with id 'x'", code="avatar_not_found"), 404, None),
    (Conflict("avatar x's stored record is damaged", code="avatar_damaged"), 409, None),
    (TooLarge("the portrait upload is larger than 20 MB", code="too_large"), 413, None),
    (Unsupported("the portrait is a GIF image", code="unsupported_image"), 415, None),
    (InvalidInput("no face was found in the portrait", code="no_face"), 422, None),
    (Busy("5 avatar uploads are already being checked", code="too_many_uploads",
          retry_after=5), 503, {"retry-after": "5"}),
    (Busy("no live audio worker is running", code="no_live_worker"), 503, None),
]


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.get("/raise/{i}")
    def refuse(i: int) -> None:
        raise CASES[i][0] if i >= 0 else StageFailed("ffmpeg: no such filter")

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("i", range(len(CASES)))
def test_each_kind_answers_with_its_status_code_and_sentence(client: TestClient, i: int) -> None:
    exc, status, headers = CASES[i]
    resp = client.get(f"/raise/{i}")
    assert resp.status_code == status
    assert resp.json() == {"error": exc.code, "message": str(exc)}
    assert resp.headers.get("retry-after") == (headers or {}).get("retry-after")


def test_an_error_that_is_no_refusal_is_an_internal_error(client: TestClient) -> None:
    resp = client.get("/raise/-1")
    assert resp.status_code == 500
    assert resp.json()["error"] == "internal_error" and "ffmpeg" not in resp.text


def test_every_refusal_kind_has_a_status() -> None:
    kinds = [Malformed, NotFound, Conflict, TooLarge, Unsupported, InvalidInput, Busy]
    assert {errors.status_of(k("x")) for k in kinds} == {400, 404, 409, 413, 415, 422, 503}
    assert errors.status_of(StageFailed("x")) is None
    assert InvalidInput("x").code == "invalid_input"  # a kind's own code when none is given
