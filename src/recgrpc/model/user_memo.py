"""What ranking remembers about one cached user context, so the next request skips its work.

The server keeps a ``UserMemo`` with each context it caches (``server.context_cache``): it is
dropped with the entry, so a write that evicts the context (LogInteraction, SubmitFeedback,
DeleteUser, UpsertUsers, another process's change) leaves nothing remembered. What a memo holds
is valid for one context object and one serving snapshot (held weakly, so a memo never keeps an
old model alive); anything else starts it afresh. Per source it keeps:

- the user's vector (or that there is none);
- a *pool*: the best ``MEMO_TOP`` positions of the user's scores with the seen, dismissed and
  unscored items masked, best first, and the fresh items scoring near them. A query's exclusions
  and category filter are applied to the pool; when what remains decides the re-ranking pool
  without doubt (enough of it, no equal scores where ``top_allowed``'s argpartition would pick
  among them) the list is ranked from it, exactly as from the whole catalogue; otherwise the
  caller scores the catalogue again;

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
from recgrpc.model.rerank import MIN_POOL, POOL_FACTOR, top_candidates

if TYPE_CHECKING:
    from recgrpc.model.ranking import ServingSnapshot

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
MEMO_TOP = 200
"""Positions a pool keeps per source: a query of up to 40 items (a re-ranking pool of 160)
with a few dozen exclusions is ranked from it."""
MAX_LISTS = 16
"""Finished lists kept per context (the oldest is dropped first)."""
APPROXIMATE_BYTES = 8_000
"""What a memo holds at most, roughly (the cache counts it with its entry)."""
_MARGIN = 1e-3


@dataclass(frozen=True, slots=True)
class SourcePool:
    top: I64
    """The best positions of the user's masked scores, best first."""
    top_scores: F32
    complete: bool
    """True when ``top`` holds every position with a finite score."""
    fresh_items: I64 | None
    """Fresh positions (ascending) scoring at least ``fresh_floor``; None: no boost."""
    fresh_raw: F32 | None
    fresh_floor: float
    """Every fresh item left out of ``fresh_items`` scores below this."""


@dataclass(frozen=True, slots=True)
class PoolPick:
    """A query's re-ranking pool taken from a ``SourcePool`` (``rerank.rerank_pool``'s input)."""

    pool: I64
    pool_scores: F32
    fresh_items: I64 | None
    fresh_raw: F32 | None


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
        if len(self.lists) >= MAX_LISTS:
            del self.lists[next(iter(self.lists))]
        self.lists[key] = ranking


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


def build_pool(scores: F32, fresh: F32 | None, fresh_items: I64 | None, boost: float) -> SourcePool:
    """The pool of a user's masked ``scores`` (one value per catalogue item)."""
    candidates = top_candidates(scores, MEMO_TOP)
    values = scores[candidates]
    complete = candidates.size < MEMO_TOP
    if candidates.size > MEMO_TOP:
        part = np.argpartition(values, values.size - MEMO_TOP)[values.size - MEMO_TOP :]
        candidates, values = candidates[part], values[part]
    order = np.argsort(-values, kind="stable")
    top, top_scores = candidates[order].astype(np.int64), values[order]
    if fresh is None or fresh_items is None or not fresh_items.size or boost <= 0:
        return SourcePool(top, top_scores, complete, None, None, -np.inf)
    raw = scores[fresh_items]
    if complete or not top.size:
        floor = -np.inf
    else:
        # A query's pool floor is at least top's last score and its span at most top's: no
        # fresh item scoring below ``floor`` can be lifted into any pool taken from ``top``.
        hi, lo = float(top_scores[0]), float(top_scores[-1])
        floor = lo - boost * (hi - lo)
        floor -= _MARGIN * (abs(floor) + (hi - lo)) + 1e-30
    near = raw >= floor
    return SourcePool(top, top_scores, complete, fresh_items[near], raw[near], floor)


def pick(
    pool: SourcePool,
    limit: int,
    excluded: I64 | None,
    in_categories: npt.NDArray[np.bool_] | None,
    boost: float,
) -> PoolPick | None:
    """The re-ranking pool ``top_allowed`` would choose for this query, or None when the
    memo's pool cannot tell it for certain (the caller then ranks the whole catalogue)."""
    size = max(MIN_POOL, POOL_FACTOR * limit)
    top, values = pool.top, pool.top_scores
    keep = None
    if excluded is not None and excluded.size:
        keep = ~np.isin(top, excluded)
    if in_categories is not None:
        keep = in_categories[top] if keep is None else keep & in_categories[top]
    if keep is not None:
        top, values = top[keep], values[keep]
    if top.size > size:
        beyond = float(values[size])
        top, values = top[:size], values[:size]
    elif not pool.complete:
        if top.size < size or not pool.top.size:
            return None
        beyond = float(pool.top_scores[-1])  # outside items score at most this
    else:
        beyond = -np.inf
    if not top.size:
        return None if not pool.complete else PoolPick(top, values, None, None)
    # Distinct scores, the last above anything left out: the pool and its order are unique.
    if not float(values[-1]) > beyond or (values.size > 1 and not (values[:-1] > values[1:]).all()):
        return None
    if pool.fresh_items is None or pool.fresh_raw is None:
        return PoolPick(top, values, None, None)
    lo, hi = float(values[-1]), float(values[0])
    bonus = boost * (hi - lo if hi > lo else 1.0)
    if lo - bonus < pool.fresh_floor + 1e-6 * (abs(lo) + bonus + abs(pool.fresh_floor)):
        return None
    items, raw = pool.fresh_items, pool.fresh_raw
    masked = None
    if excluded is not None and excluded.size:
        masked = np.isin(items, excluded)
    if in_categories is not None:
        outside = ~in_categories[items]
        masked = outside if masked is None else masked | outside
    if masked is not None and masked.any():
        raw = raw.copy()
        raw[masked] = -np.inf
    return PoolPick(top, values, items, raw)
