"""stdin and stdout as the stdio transport uses them: a line reader and a line writer that work
on a pipe (with flow control), a socket, a regular file, a terminal and Windows' pipes alike."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
import threading
from typing import Any

__all__ = ["Output", "open_input", "open_output", "skip_line"]

_READ_CHUNK = 64 * 1024


async def skip_line(reader: asyncio.StreamReader) -> None:
    """Drop the rest of a line too long to take, up to and with its newline."""
    while True:
        try:
            await reader.readuntil(b"\n")
            return
        except asyncio.LimitOverrunError as exc:
            await reader.readexactly(exc.consumed)
        except asyncio.IncompleteReadError:
            return


def _is_pipe(fd: int) -> bool:
    """A pipe or a socket, which the loop can watch. Anything else (a regular file, a terminal,
    /dev/null) the loop cannot, and uvloop aborts the process when asked to; nor can Windows'
    loop watch the pipes a parent gives (they are not opened for overlapped reads)."""
    if sys.platform == "win32":
        return False
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


async def open_input(fd: int, limit: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    if _is_pipe(fd):
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     os.fdopen(fd, "rb", buffering=0, closefd=False))
        return reader
    # Read in a daemon thread, which never holds up the process's exit (a regular file has no
    # flow control to lose; a terminal is typed into).
    threading.Thread(target=_feed, args=(loop, reader, fd), name="stdio-input",
                     daemon=True).start()
    return reader


def _feed(loop: asyncio.AbstractEventLoop, reader: asyncio.StreamReader, fd: int) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody reads on
        try:
            while chunk := os.read(fd, _READ_CHUNK):
                loop.call_soon_threadsafe(reader.feed_data, chunk)
        except OSError:
            pass  # stdin failed: as good as its end
        loop.call_soon_threadsafe(reader.feed_eof)


class Output:
    """stdout: each line one write, in the order sent; a pipe with flow control, anything else
    (a regular file, a terminal, Windows) with plain writes."""

    def __init__(self, file: Any, writer: asyncio.StreamWriter | None) -> None:
        self._file = file
        self._writer = writer
        self.closed = False

    async def write(self, data: bytes) -> None:
        if self._writer is None:
            view = memoryview(data)
            while view:
                view = view[os.write(self._file.fileno(), view):]
            return
        if self._writer.is_closing():
            raise BrokenPipeError("stdout is closed")
        self._writer.write(data)  # the whole line goes into the transport's buffer at once
        await self._writer.drain()

    async def close(self) -> None:
        self.closed = True
        if self._writer is None:
            self._file.close()
            return
        # Every write was drained, so nothing is left to flush: the client sees EOF now.
        self._writer.close()


async def open_output(fd: int) -> Output:
    loop = asyncio.get_running_loop()
    file = os.fdopen(fd, "wb", buffering=0)
    if not _is_pipe(fd):
        return Output(file, None)
    # FlowControlMixin is the protocol asyncio's own stream helpers give a write pipe: it makes
    # StreamWriter.drain wait while the client is not reading.
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, file)
    return Output(file, asyncio.StreamWriter(transport, protocol, None, loop))
