"""JSON-lines logging on stdout, with the current request id on every line.

No traceback is written: a failure is logged as its type, message and the innermost frame of our
own code, which points an operator at the place without printing frames that might carry data.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["AccessRecord", "JsonFormatter", "configure_logging", "request_id_var"]

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def _where(exc: BaseException) -> str | None:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f.filename.startswith(_PACKAGE_ROOT)]
    if not ours:
        return None
    frame = ours[-1]
    return f"{Path(frame.filename).relative_to(Path(_PACKAGE_ROOT).parent)}:{frame.lineno}"


class AccessRecord(logging.LogRecord):
    """The INFO record of one access line, for ``Logger.handle``.

    ``Logger.info`` works out the same attributes for every access line (the caller's file and
    module from a path, the level's name, ...); here they are copied from the logger's first
    record, which saves about a third of the line's cost. The time is this record's own.
    """

    _templates: dict[str, dict[str, Any]] = {}

    def __init__(self, logger: str, fields: dict[str, Any]) -> None:
        template = self._templates.get(logger)
        if template is None:
            template = self._templates[logger] = vars(logging.LogRecord(
                logger, logging.INFO, "(unknown file)", 0, "request", (), None))
        self.__dict__.update(template)
        created = time.time()
        self.created = created
        self.msecs = int((created - int(created)) * 1000) + 0.0
        self.relativeCreated = template["relativeCreated"] + (created - template["created"]) * 1e3
        self.__dict__.update(fields)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # The timestamp up to the second, rendered once per second rather than once per line.
        self._second = -1
        self._second_text = ""

    def _timestamp(self, created: float) -> str:
        # Rounded to the microsecond as datetime.fromtimestamp does, then cut to milliseconds.
        second = int(created)
        micro = round((created - second) * 1e6)
        if micro >= 1_000_000:
            second, micro = second + 1, micro - 1_000_000
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).isoformat()[:19]
            self._second = second
        return f"{self._second_text}.{micro // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            line["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error"] = f"{type(exc).__name__}: {exc}"
            if where := _where(exc):
                line["at"] = where
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The JSON lines carry none of the caller's file, line, thread or process: do not collect
    # them for every record (finding the caller walks the stack on each call).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # aiohttp's access log would repeat what our request middleware logs, without the request id.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
