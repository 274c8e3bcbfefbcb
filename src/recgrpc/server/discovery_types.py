"""What the discovery handlers take and return, and the writer of their impressions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from recgrpc import domain
from recgrpc.db import discovery
from recgrpc.model.home_feed import HomeFeed
from recgrpc.model.similar import SimilarityMode
from recgrpc.server.group_commit import GroupCommitter, _Pending


@dataclass(frozen=True)
class SimilarQuery:
    item_id: str
    limit: int
    user_id: str = ""
    exclude_item_ids: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    mode: SimilarityMode = SimilarityMode.AUTO
    platform: str = ""


@dataclass(frozen=True)
class TogetherQuery:
    item_ids: tuple[str, ...]
    limit: int
    user_id: str = ""
    exclude_item_ids: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    platform: str = ""


@dataclass(frozen=True)
class DiscoveryList:
    """A served discovery list: the items, where they came from and why a fallback was used."""

    recset_id: str
    generated_at: datetime
    items: Sequence[domain.ScoredItem]
    source: str
    model_version: str = ""
    fallback_reason: str = ""
    mode: SimilarityMode = SimilarityMode.AUTO


@dataclass(frozen=True)
class ServedFeed:
    feed: HomeFeed
    recset_ids: list[str]
    generated_at: datetime
    omitted: list[str] = field(default_factory=list)


Impressions = list[discovery.DiscoveryImpression]


class ImpressionWriter(GroupCommitter[Impressions]):
    """Discovery lists' impressions (a call's lists together), committed together for
    concurrent calls."""

    name = "discovery-impression-writer"
    what = "discovery impression"

    def _store(self, batch: Sequence[_Pending[Impressions]]) -> None:
        with self._db.transaction() as conn:
            discovery.record_impressions(conn, [i for p in batch for i in p.item])


@dataclass(frozen=True)
class Unserved:
    items: Sequence[domain.ScoredItem]
    source: str
    model_version: str = ""
    fallback_reason: str = ""
    mode: SimilarityMode = SimilarityMode.AUTO
    recorded: bool = True
    """False while the database is down: the list is served, its impression is not written."""
