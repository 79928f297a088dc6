"""The answer of a POST on a shared session that is an SSE stream (progress, a question to the
client): its events are kept in Redis as well, in a stream of their own, so that a GET with the
Last-Event-ID of one of them resumes that POST's stream on any process, as the 2025-11-25
transport allows, with what the call sends after the client lost it, its answer included (or the
failure answer a reaper posts when the process running the call died: shared_reaper.py).

An event id of such a stream is ``<stream id>_<entry id>``: the first part tells which stream,
the second where in it. The stream begins with a priming entry and ends with an entry marking its
end (neither is a message).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import orjson

from .shared_bus import Bus

__all__ = ["POST_EVENT_ID", "POST_STREAMS_KEPT", "PostStream", "post_stream_key"]

# A session's newest POST streams kept for a resumption; an older one is gone (as an expired
# one is: its resumption ends at once). Without a bound, a client asking for a streamed answer
# on every request would keep one stream per request in Redis for the idle timeout.
POST_STREAMS_KEPT = 64

# A POST stream's event id (Last-Event-ID): which stream, and the Redis entry id in it. ASCII
# digits only (``\d`` takes any script's), and ``\Z``: ``$`` would take a trailing newline.
POST_EVENT_ID = re.compile(r"^([0-9a-f]{16})_([0-9]{1,20}-[0-9]{1,20})\Z")


def post_stream_key(session_key: str, stream_id: str) -> str:
    return f"{session_key}:post:{stream_id}"


class PostStream:
    """Records one POST's SSE answer: each event in order (through the bus's one queue), and
    which of the session's requests it answers (``<session>:posts``: request id → stream), so a
    reaper answering one of them knows to answer on this stream."""

    def __init__(self, bus: Bus, session_key: str, request_ids: list[Any]) -> None:
        self.id = secrets.token_hex(8)
        self._bus = bus
        self._key = post_stream_key(session_key, self.id)
        self._posts = f"{session_key}:posts"
        self._requests = [orjson.dumps(r) for r in request_ids]
        self._count = 0
        bus.track_post(session_key, self.id, POST_STREAMS_KEPT)
        if self._requests:
            bus.map_requests(self._posts, self._requests, self.id)

    def prime(self) -> str:
        """The id of the stream's first event, sent with no data (the 2025-11-25 transport's
        priming event): a client that loses the stream before anything else was sent resumes
        from it. Its entry makes the stream exist in Redis from the start."""
        return self._add({"p": b"1"})

    def record(self, message: dict[str, Any]) -> str:
        """Keep ``message``; the event id to send it with."""
        return self._add({"m": orjson.dumps(message)})

    def _add(self, fields: dict[str, bytes]) -> str:
        self._count += 1
        entry = f"0-{self._count}"
        self._bus.add_entry(self._key, entry, fields)
        return f"{self.id}_{entry}"

    def finish(self) -> None:
        """Every answer is recorded: a resumed stream ends after them."""
        self._bus.end_entries(self._key, self._posts, self._requests)
