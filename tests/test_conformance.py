"""The MCP conformance suite against the product, through tests/conformance_harness.py.

Runs only with CONFORMANCE=1 (CI sets it): it needs npx and, on a first run, the npm registry.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUITE = ["npx", "-y", "-p", "node@22", "-p", "@modelcontextprotocol/conformance@0.1.16",
         "conformance"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("CONFORMANCE") != "1",
                       reason="set CONFORMANCE=1 to run the MCP conformance suite"),
]


def test_conformance_suite_passes(superuser_url: str) -> None:
    env = {**os.environ, "TEST_DATABASE_URL": superuser_url}
    completed = subprocess.run(
        [sys.executable, "-m", "tests.conformance_harness", "--", *SUITE],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-5000:]
    assert re.search(r"Total: [1-9]\d* passed, 0 failed", output), output[-5000:]
