"""What ranking remembers about one cached user context, so the next request skips its work.

The server keeps a ``UserMemo`` with each context it caches (``server.context_cache``): it is
dropped with the entry, so a write that evicts the context (LogInteraction, SubmitFeedback,
DeleteUser, UpsertUsers, another process's change) leaves nothing remembered. What a memo holds
is valid for one context object and one serving snapshot (held weakly, so a memo never keeps an
old model alive); anything else starts it afresh. Per source it keeps:

- the user's vector (or that there is none);
- a pool (model.memo_pool): the best one to four hundred positions of the user's scores with the
  seen, dismissed and unscored items masked, and the fresh items scoring near them. A query's
  exclusions and category filter are applied to it; when what remains decides the re-ranking
  pool for certain, the list is ranked from it exactly as from the whole catalogue; otherwise
  the caller scores the catalogue again;

and the finished lists of the last few queries (a repeated query is answered from them).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from recgrpc import domain
from recgrpc.domain import Algorithm
from recgrpc.model.memo_pool import SourcePool

if TYPE_CHECKING:
    from recgrpc.model.ranking import ServingSnapshot

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
MAX_LISTS = 4
"""Finished lists kept per context (then it starts over)."""
APPROXIMATE_BYTES = 10_000
"""What a memo typically holds (a source's pool of about 6 kB, a few lists; the cache counts
it with its entry)."""


QueryKey = tuple[Algorithm, int, frozenset[str], frozenset[str]]


@dataclass(slots=True)
class MemoState:
    """A memo's contents for one (context, snapshot)."""

    context: domain.UserContext
    snapshot: weakref.ref[ServingSnapshot]
    blocked: I64 | None = None
    """Seen and dismissed positions (the spare slot past the catalogue for unknown ids)."""
    vectors: dict[Algorithm, F32 | None] = field(default_factory=dict)
    pools: dict[Algorithm, SourcePool] = field(default_factory=dict)
    lists: dict[QueryKey, domain.RecommendationList] = field(default_factory=dict)

    def remember(self, key: QueryKey, ranking: domain.RecommendationList) -> None:
        lists = self.lists
        if len(lists) >= MAX_LISTS:  # start over (one assignment: safe for other threads)
            lists = self.lists = {}
        lists[key] = ranking


class UserMemo:
    """Thread-safe: a state is replaced whole, never half-updated for another context."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state: MemoState | None = None

    def state(self, context: domain.UserContext, snap: ServingSnapshot) -> MemoState:
        """The memo's state for exactly this context object and snapshot (afresh otherwise)."""
        state = self._state
        if state is None or state.context is not context or state.snapshot() is not snap:
            state = MemoState(context, weakref.ref(snap))
            self._state = state
        return state


def query_key(query: domain.RecommendationQuery) -> QueryKey:
    return (query.algorithm, query.limit, query.exclude_item_ids, query.categories)
