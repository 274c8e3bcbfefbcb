"""The search index the server keeps beside its serving snapshot, and searches in profiles.

The index is rebuilt by the snapshot refresher whenever the catalogue's stamp changes (and at
start-up, before the server reports SERVING); between a catalogue write and that rebuild,
SearchItems drops matches that left the active catalogue at query time (server.search_items).
A user's recent searches join their profile as SEARCH events on their best matches.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from recgrpc import domain
from recgrpc.config import Settings
from recgrpc.db import Database, user_history
from recgrpc.model.ranking import ServingSnapshot
from recgrpc.model.search import SearchIndex, Synonyms, best_matches
from recgrpc.server.errors import is_database_outage

log = logging.getLogger(__name__)

PROFILE_SEARCHES = 20
"""A user's latest searches that shape their recommendations."""
PROFILE_MATCHES = 3
"""Best matches of each such search folded into the user's vector, like viewed items."""


def read_synonyms(path: str) -> Synonyms:
    """The synonyms file named by ``Settings.search_synonyms_file`` (none when empty)."""
    if not path:
        return Synonyms()
    return Synonyms.parse(Path(path).read_text(encoding="utf-8"))


class SearchIndexKeeper:
    """The current search index; rebuilt off the request path when the catalogue changes."""

    def __init__(self, settings: Settings) -> None:
        self.synonyms = read_synonyms(settings.search_synonyms_file)
        self._index = SearchIndex.build([], self.synonyms)
        self._stamp: object = None
        self._built = False
        self._building = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def close(self, timeout: float = 60.0) -> None:
        """Start no more rebuilds and wait for one in progress (it must not outlive the
        server: its database and its log handlers go away)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    @property
    def index(self) -> SearchIndex:
        return self._index

    def refresh(self, db: Database, snapshot: ServingSnapshot) -> None:
        """Rebuild when the snapshot's catalogue stamp differs from the index's.

        The first build runs here (before the server reports SERVING); later ones on a thread
        of their own, so a large catalogue does not hold up the snapshot refresher, while the
        previous index keeps serving.
        """
        stamp = snapshot.catalog_stamp
        if self._built and stamp == self._stamp:
            return
        if not self._built:
            self._rebuild(db, stamp)
            return
        with self._lock:
            if self._building or self._closed:
                return
            self._building = True
            self._thread = threading.Thread(
                target=self._rebuild, args=(db, stamp), name="recgrpc-search-index", daemon=True
            )
            self._thread.start()

    def _rebuild(self, db: Database, stamp: object) -> None:
        try:
            with db.reader() as session:
                rows = user_history.search_documents(session)
            index = SearchIndex.build(rows, self.synonyms)
            self._index, self._stamp, self._built = index, stamp, True
            log.debug("search index rebuilt: %d items", len(rows))
        except Exception as exc:
            if not self._built:
                raise  # the refresher reports it and tries again
            if not is_database_outage(exc):
                log.exception("search index rebuild failed; keeping the previous one")
        finally:
            self._building = False

    def with_searches(
        self, executor: Session | Connection, context: domain.UserContext
    ) -> domain.UserContext:
        """The context with the best matches of the user's recent searches added as SEARCH
        events, so ranking folds them into the user's vector like items they looked at.

        Reads the queries only for a user whose history holds a search.
        """
        if not any(e.type is domain.InteractionType.SEARCH for e in context.recent):
            return context
        index = self._index
        added: list[domain.RecentInteraction] = []
        for query, at in user_history.recent_searches(executor, context.user_id, PROFILE_SEARCHES):
            scores = index.scores(query)
            for position in best_matches(scores, scores > 0, PROFILE_MATCHES).tolist():
                added.append(
                    domain.RecentInteraction(
                        index.item_ids[position], domain.InteractionType.SEARCH, 0.0, at
                    )
                )
        if not added:
            return context
        return replace(context, recent=(*context.recent, *added))
