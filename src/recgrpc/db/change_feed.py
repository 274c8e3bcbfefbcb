"""PostgreSQL's feed of changed users: one LISTEN connection per server process.

Writers announce each user whose stored context they changed with ``pg_notify(CHANNEL,
'<origin> <user_id>')`` inside their transaction (``PostgresSql.notify_users``, and the
statement that stores events: LogInteraction's and imports'); PostgreSQL delivers it when, and
only if, the transaction commits. Each server process keeps a dedicated autocommit connection
that LISTENs on the channel and hands the user ids announced by other processes (other
``Database.origin``s) to its listener (``server.context_cache``). When that connection fails, the
listener is told at once (``lost``) and the feed reconnects every ``retry_seconds``; once it
listens again the listener is told (``listening``): notifications sent meanwhile are gone.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import psycopg
from sqlalchemy import URL

from recgrpc.db.dialect import ChangeListener

log = logging.getLogger(__name__)

CHANNEL = "recgrpc_user_changed"
"""The NOTIFY channel; each payload is the announcing Database's origin, a space, a user id."""

POLL_SECONDS = 0.25
"""How often the listening thread looks up from the socket to see whether it should stop."""


def application_name() -> str:
    """How the feed's connection shows in ``pg_stat_activity`` (one per server process)."""
    return f"recgrpc-change-feed-{os.getpid()}"


def conninfo(url: URL) -> str:
    """libpq's URI for a SQLAlchemy PostgreSQL URL (the driver name dropped)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class UserChangeFeed:
    """The listening thread; ``close`` stops it (within ``POLL_SECONDS``)."""

    def __init__(
        self,
        url: URL,
        connect_args: Mapping[str, Any],
        listener: ChangeListener,
        origin: str,
        *,
        retry_seconds: float = 1.0,
    ) -> None:
        self._origin = origin
        self._conninfo = conninfo(url)
        self._connect_args = dict(connect_args)
        self._listener = listener
        self._retry = retry_seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recgrpc-change-feed", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        down = False  # since the last failure, until listening again
        while not self._stopping.is_set():
            try:
                self._listen(down)
                return
            except Exception as exc:  # any failure: tell at once, then reconnect
                self._listener.lost()
                if self._listened:  # it had been listening: a new outage
                    down, self._listened = False, False
                if not down:
                    log.warning(
                        "change feed lost (%s): cached user contexts off until it listens again",
                        exc.__class__.__name__,
                    )
                down = True
            self._stopping.wait(self._retry)

    _listened = False

    def _listen(self, was_down: bool) -> None:
        with psycopg.connect(
            self._conninfo,
            autocommit=True,
            application_name=application_name(),
            **self._connect_args,
        ) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self._listener.listening()
            if was_down:
                log.info("change feed listening again; cached user contexts back on")
            self._listened = True
            while not self._stopping.is_set():
                for notice in conn.notifies(timeout=POLL_SECONDS):
                    origin, _, user_id = notice.payload.partition(" ")
                    if origin != self._origin:  # this process evicted its own at commit
                        self._listener.changed((user_id,))
