"""Disaster recovery: rebuild Redis from the files on disk after Redis lost its data entirely.

Every committed job transition is mirrored to `jobs/<id>/job.json` and every avatar has its
`avatar.json`; `jayavatar recover --from-disk` reads them back. Unfinished jobs are re-enqueued
at their stage; the workers then skip every stage whose checkpoint is already valid on disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import redis
from pydantic import ValidationError

from shared import keys
from shared.jobs import JobStore
from shared.layout import AVATAR_RECORD, JOB_RECORD, Layout
from shared.models import AvatarRecord, JobRecord
from shared.storage import read_json

logger = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    jobs_restored: int = 0
    jobs_requeued: int = 0
    jobs_present: int = 0
    avatars_restored: int = 0
    unreadable: int = 0
    expired: int = 0  # finished longer ago than JOB_RETENTION_DAYS: not restored


def recover_from_disk(conn: redis.Redis, store: JobStore, data_dir: Path) -> RecoveryReport:
    report = RecoveryReport()
    layout = Layout(data_dir)
    for path in sorted(layout.avatars.glob(f"*/{AVATAR_RECORD}")):
        try:
            avatar = AvatarRecord.model_validate(read_json(path))
        except (OSError, ValueError, ValidationError):
            report.unreadable += 1
            continue
        if path.parent.name != avatar.id:  # a staging or half-deleted folder, not an avatar
            continue
        if conn.set(keys.avatar(avatar.id), avatar.model_dump_json(), nx=True):
            conn.zadd(keys.AVATARS, {avatar.id: avatar.created_at})
            report.avatars_restored += 1
    for path in sorted(layout.jobs.glob(f"*/{JOB_RECORD}")):
        try:
            rec = JobRecord.model_validate(read_json(path))
        except (OSError, ValueError, ValidationError):
            logger.warning("recover: %s is unreadable; skipped", path)
            report.unreadable += 1
            continue
        if store.expired(rec):
            report.expired += 1
            continue
        active = not rec.terminal
        if store.restore(rec):
            report.jobs_restored += 1
            report.jobs_requeued += int(active)
        else:
            report.jobs_present += 1
    return report
