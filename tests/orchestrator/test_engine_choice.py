"""The orchestrator chooses engines from the catalogue alone: it imports no engine code."""

from __future__ import annotations

import subprocess
import sys


def test_choosing_engines_imports_no_service_code() -> None:
    code = ("import sys, orchestrator.engines, orchestrator.sessions; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'services'))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
