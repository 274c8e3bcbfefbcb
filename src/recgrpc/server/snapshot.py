"""The serving snapshot's build: catalogue, trending and the active model, read by the refresher."""

from __future__ import annotations

import weakref
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from recgrpc.config import Settings
from recgrpc.db import Database, model_store, queries
from recgrpc.model.catalog import CatalogIndex
from recgrpc.model.ranking import RankingConfig, ServingSnapshot
from recgrpc.model.representations import needs_load, refresh_view
from recgrpc.model.trending import trending_scores
from recgrpc.validation import before


def build_snapshot(
    db: Database, settings: Settings, now: datetime, previous: ServingSnapshot | None = None
) -> ServingSnapshot:
    """Catalogue, trending scores and the active model, read in one read session.

    The model artifact is fetched only when the active version differs from ``previous``'s
    (polling is one indexed query on kind/status). The catalogue is read again only when its
    stamp changed (or a new model must be aligned with it): rebuilding a large catalogue every
    refresh would hold the interpreter long enough to show in every request's tail latency.
    """
    old_view = None if previous is None else previous.model
    rejected = "" if previous is None else previous.rejected_model_version
    with db.reader() as session:
        stamp = queries.catalogue_stamp(session)
        # Trending is anchored at the newest event when that is in the past (history imported
        # from years ago still has a popularity ranking), at the wall clock otherwise.
        newest = queries.newest_event_time(session)
        anchor = now if newest is None else min(now, newest)
        since = before(anchor, timedelta(days=settings.trending_window_days))
        counts = _trending_counts(db, session, since)
        stamp_of_model = model_store.active_model_stamp(session, model_store.RECOMMENDER)
        version, revision = stamp_of_model or (None, 0)
        stored = None
        if needs_load(old_view, rejected, version, revision):
            stored = model_store.load_model(session, version or "")
        rows = None
        if previous is None or previous.catalog_stamp != stamp or stored is not None:
            rows = queries.catalogue(session)
    if rows is None:
        assert previous is not None
        catalog = previous.catalog
    else:
        catalog = CatalogIndex.build(rows)
    view, rejected = refresh_view(
        old_view, rejected, version, None if stored is None else stored.artifact, rows,
        ann_min_items=settings.ann_min_items,
    )  # fmt: skip
    trending = _trending(db, settings, counts, catalog, anchor)
    return ServingSnapshot.assemble(
        catalog,
        trending,
        now,
        model=view,
        config=RankingConfig.from_settings(settings),
        rejected_model_version=rejected,
        catalog_stamp=stamp,
    )


# The window's counts as last read, per Database: re-read only when the window's stamp
# changed, since grouping every event of the window is most of a refresh's work.
_COUNTS: weakref.WeakKeyDictionary[Database, tuple[object, list[tuple[str, str, int, int]]]] = (
    weakref.WeakKeyDictionary()
)


def _trending_counts(
    db: Database, session: Session, since: datetime
) -> list[tuple[str, str, int, int]]:
    stamp = queries.event_window_stamp(session, since)
    kept = _COUNTS.get(db)
    if kept is not None and kept[0] == stamp:
        return kept[1]
    counts = queries.hourly_event_counts(session, since)
    _COUNTS[db] = (stamp, counts)
    return counts


# The scores of the counts kept above, while neither they, the catalogue nor the anchor moved.
_SCORED: weakref.WeakKeyDictionary[
    Database, tuple[object, CatalogIndex, object, npt.NDArray[np.float32]]
] = weakref.WeakKeyDictionary()


def _trending(
    db: Database,
    settings: Settings,
    counts: list[tuple[str, str, int, int]],
    catalog: CatalogIndex,
    anchor: datetime,
) -> npt.NDArray[np.float32]:
    half_life, weights = settings.trending_half_life_days, settings.interaction_weights
    key = (anchor, half_life, tuple(weights.items()))
    kept = _SCORED.get(db)
    if kept is not None and kept[0] == key and kept[1] is catalog and kept[2] is counts:
        return kept[3]
    trending = trending_scores(counts, catalog, anchor, half_life, weights)
    _SCORED[db] = (key, catalog, counts, trending)
    return trending
