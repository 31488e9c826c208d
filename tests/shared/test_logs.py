"""Every log line names its job and stage."""

from __future__ import annotations

import logging

import pytest

from shared.logs import ContextFilter, job_context


def test_lines_carry_the_job_and_stage_they_were_written_for(caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    caplog.handler.addFilter(ContextFilter())
    log = logging.getLogger("jayavatar.test")
    with caplog.at_level(logging.INFO):
        log.info("before")
        with job_context("abc123", "visual"):
            log.info("inside")
            with job_context("def456", "compose"):
                log.info("nested")
            log.info("back")
        log.info("after")
    tags = [(r.job, r.stage, r.getMessage()) for r in caplog.records]  # type: ignore[attr-defined]
    assert tags == [("-", "-", "before"), ("abc123", "visual", "inside"),
                    ("def456", "compose", "nested"), ("abc123", "visual", "back"),
                    ("-", "-", "after")]
