"""The MCP conformance suite runs CI holds the product to: the one place their versions are pinned.

``make conformance`` and tests/test_conformance.py both run every suite here through
tests/conformance_harness.py (``python -m tests.conformance_harness --suite NAME|all``).
"""

from __future__ import annotations

import dataclasses
import re

__all__ = ["SUITES", "Suite", "failed_lines"]

_NODE = "node@22"


@dataclasses.dataclass(frozen=True, slots=True)
class Suite:
    """One run of the suite: its npm package (pinned) and the options after ``server --url``."""

    name: str
    package: str
    args: tuple[str, ...] = ()

    @property
    def command(self) -> list[str]:
        return ["npx", "-y", "-p", _NODE, "-p", self.package, "conformance"]


SUITES: dict[str, Suite] = {suite.name: suite for suite in (
    # The last suite of the handshake eras' own line: every scenario it has.
    Suite(name="0.1.16", package="@modelcontextprotocol/conformance@0.1.16"),
    # The suite that scores the released 2026-07-28 revision, once per era it scores.
    Suite(name="2025-11-25", package="@modelcontextprotocol/conformance@0.2.0-alpha.12",
          args=("--requirements", "2025-11-25")),
    Suite(name="2026-07-28", package="@modelcontextprotocol/conformance@0.2.0-alpha.12",
          args=("--requirements", "2026-07-28")),
)}

# A scenario's summary line: "✗ caching: 3 passed, 5 failed", and under "Not scored" (extension
# and pending scenarios, which the suite's exit status ignores) "  ✗ json-schema-2020-12 (pending)".
_FAILED = re.compile(r"^\s*✗ .+$", re.MULTILINE)


def failed_lines(output: str) -> list[str]:
    """Every failing scenario the suite reported, scored or not."""
    return [line.strip() for line in _FAILED.findall(output)]
