"""The checkpoint protocol (shared/checkpoint.py): the manifest is written last and vouches for
every file; a folder without a valid manifest is never consumed; publishing is one rename."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shared.checkpoint import MANIFEST, load_manifest, publish, write_manifest
from shared.storage import atomic_writer, sha256_file


def _fields(input_hash: str = "h1") -> dict:
    return {"stage": "audio", "job_id": "j1", "engine": "piper", "engine_version": "1",
            "input_hash": input_hash, "execution_id": "exec-1"}


def _work(tmp_path: Path, name: str = "audio.tmp-exec1", speech: bytes = b"RIFF" + b"\1" * 996,
          input_hash: str = "h1") -> Path:
    work = tmp_path / name
    work.mkdir()
    (work / "speech.wav").write_bytes(speech)
    (work / "phonemes.json").write_text('{"phonemes": []}')
    write_manifest(work, _fields(input_hash), ["speech.wav", "phonemes.json"])
    return work


def test_the_manifest_lists_every_file_with_its_size_and_sha256(tmp_path: Path) -> None:
    work = _work(tmp_path)
    manifest = load_manifest(work)
    assert manifest is not None and manifest.input_hash == "h1"
    listed = {f.name: (f.size, f.sha256) for f in manifest.files}
    assert listed == {name: ((work / name).stat().st_size, sha256_file(work / name))
                      for name in ("speech.wav", "phonemes.json")}
    assert json.loads((work / MANIFEST).read_text())["execution_id"] == "exec-1"
    assert [p.name for p in work.iterdir() if p.name.endswith(".tmp")] == []


def test_files_without_a_manifest_are_not_a_checkpoint(tmp_path: Path) -> None:
    """A stage that died before its manifest: its files are garbage, never consumed."""
    work = tmp_path / "audio.tmp-x"
    work.mkdir()
    (work / "speech.wav").write_bytes(b"\1" * 1000)
    assert load_manifest(work) is None
    assert load_manifest(tmp_path / "nothing-here") is None


def test_a_write_interrupted_before_the_rename_leaves_the_old_file(tmp_path: Path) -> None:
    """Torn writes: a crash while writing leaves the old manifest (or none), never half."""
    work = _work(tmp_path)
    before = (work / MANIFEST).read_bytes()
    with pytest.raises(RuntimeError), atomic_writer(work / MANIFEST) as fh:
        fh.write(before[: len(before) // 2])
        raise RuntimeError("the process died mid-write")
    assert (work / MANIFEST).read_bytes() == before
    assert not [p for p in work.iterdir() if p.name.startswith(".")], "temp file left behind"
    assert load_manifest(work) is not None


@pytest.mark.parametrize("damage", [
    "torn manifest", "empty manifest", "manifest missing a field", "listed file missing",
    "file truncated", "file longer", "file with other bytes", "manifest only as a temp file",
])
def test_a_damaged_checkpoint_is_never_valid(tmp_path: Path, damage: str) -> None:
    work = _work(tmp_path)
    manifest = work / MANIFEST
    speech = work / "speech.wav"
    if damage == "torn manifest":
        manifest.write_bytes(manifest.read_bytes()[:-40])
    elif damage == "empty manifest":
        manifest.write_bytes(b"")
    elif damage == "manifest missing a field":
        doc = json.loads(manifest.read_text())
        del doc["input_hash"]
        manifest.write_text(json.dumps(doc))
    elif damage == "listed file missing":
        speech.unlink()
    elif damage == "file truncated":
        speech.write_bytes(speech.read_bytes()[:500])
    elif damage == "file longer":
        speech.write_bytes(speech.read_bytes() + b"\0")
    elif damage == "file with other bytes":
        speech.write_bytes(b"RIFF" + b"\2" * 996)  # same size, other content
    else:  # a crash between writing the temp file and renaming it into place
        os.rename(manifest, work / f".{MANIFEST}.abc.tmp")
    assert load_manifest(work) is None


def test_the_cheap_check_trusts_sizes_only(tmp_path: Path) -> None:
    """`verify=False` (serving a result) checks presence and sizes, not hashes."""
    work = _work(tmp_path)
    (work / "speech.wav").write_bytes(b"RIFF" + b"\2" * 996)
    assert load_manifest(work, verify=False) is not None
    (work / "speech.wav").write_bytes(b"RIFF")
    assert load_manifest(work, verify=False) is None


def test_publish_renames_the_work_dir_into_place(tmp_path: Path) -> None:
    work = _work(tmp_path)
    final = tmp_path / "audio"
    assert publish(work, final) is True
    assert not work.exists()
    manifest = load_manifest(final)
    assert manifest is not None and manifest.execution_id == "exec-1"
    assert sorted(p.name for p in final.iterdir()) == ["manifest.json", "phonemes.json",
                                                       "speech.wav"]


def test_a_twin_publishing_the_same_input_does_not_replace_the_result(tmp_path: Path) -> None:
    final = tmp_path / "audio"
    assert publish(_work(tmp_path, "audio.tmp-a"), final) is True
    first = (final / MANIFEST).read_bytes()
    twin = _work(tmp_path, "audio.tmp-b", speech=b"RIFF" + b"\3" * 996)
    assert publish(twin, final) is False
    assert (final / MANIFEST).read_bytes() == first


def test_publish_replaces_a_folder_without_a_valid_manifest(tmp_path: Path) -> None:
    final = tmp_path / "audio"
    final.mkdir()
    (final / "speech.wav").write_bytes(b"half a file")
    assert publish(_work(tmp_path), final) is True
    assert load_manifest(final) is not None
    assert not list(tmp_path.glob("audio.garbage-*"))


def test_publish_replaces_a_result_made_from_other_input(tmp_path: Path) -> None:
    """A stage redone because its inputs changed (its checkpoint's input hash differs) must
    publish the new result: the old one belongs to inputs that no longer hold."""
    final = tmp_path / "audio"
    assert publish(_work(tmp_path, "audio.tmp-old", input_hash="old"), final) is True
    new = _work(tmp_path, "audio.tmp-new", speech=b"RIFF" + b"\4" * 996, input_hash="new")
    assert publish(new, final) is True
    manifest = load_manifest(final)
    assert manifest is not None and manifest.input_hash == "new"
    assert (final / "speech.wav").read_bytes() == b"RIFF" + b"\4" * 996
