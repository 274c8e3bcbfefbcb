"""POPULAR from the precomputed trending order (large catalogues, model.popular) gives the list
ranking the whole catalogue gives: filters, freshness boost and diversity included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from recgrpc import domain
from recgrpc.domain import Algorithm
from recgrpc.model.catalog import CatalogIndex
from recgrpc.model.popular import top_trending, trending_order
from recgrpc.model.ranking import RankingConfig, RankingEngine, ServingSnapshot
from recgrpc.model.rerank import RerankConfig

NOW = datetime(2026, 1, 1, tzinfo=UTC)
N = 3_000


def snapshot(rerank: RerankConfig, *, ties: bool = False) -> ServingSnapshot:
    rng = np.random.default_rng(4)
    rows = [
        (f"i{i}", [f"c{i % 12}"], [], NOW - timedelta(days=float(rng.uniform(0, 200))))
        for i in range(N)
    ]
    trending = rng.pareto(1.5, N).astype(np.float32)
    if ties:  # a few distinct values: many items tie with the pool's floor
        trending = np.floor(trending * 2).astype(np.float32)
    config = RankingConfig(rerank=rerank)
    return ServingSnapshot.assemble(
        CatalogIndex.build(rows), trending, NOW, model=None, config=config
    )


def held(snap: ServingSnapshot):  # the order a large catalogue's engine keeps
    from recgrpc.model.popular import TrendingOrder

    assert snap.freshness is not None
    return snap.trending, TrendingOrder.build(snap.trending, snap.freshness)


def contexts() -> list[tuple[domain.UserContext, domain.RecommendationQuery]]:
    rng = np.random.default_rng(5)
    out = []
    for k in range(30):
        top = [f"i{i}" for i in rng.integers(0, N, 40)]
        seen = frozenset(top[: k % 20])
        dismissed = frozenset(top[20 : 20 + k % 5])
        excluded = frozenset(top[30 : 30 + k % 7]) | {"not-an-item"}
        context = domain.UserContext(f"u{k}", True, seen, dismissed)
        query = domain.RecommendationQuery(
            f"u{k}", 1 + k % 25, Algorithm.POPULAR, exclude_item_ids=excluded
        )
        out.append((context, query))
    return out


@pytest.mark.parametrize(
    "rerank",
    [
        RerankConfig(),
        RerankConfig(diversity=0.3, freshness_boost=0.5, freshness_half_life_days=30),
        RerankConfig(freshness_boost=0.0),
    ],
)
def test_the_walk_gives_the_whole_catalogue_ranking(rerank: RerankConfig) -> None:
    snap = snapshot(rerank)
    exact = RankingEngine(snap)  # a small catalogue: ranked whole
    order = held(snap)
    for context, query in contexts():
        want = exact.recommend(context, query)
        got = top_trending(order, snap, context, query)
        assert got is not None
        ids = [snap.catalog.item_ids[i] for i in got.indices.tolist()]
        assert ids == [item.item_id for item in want.items]
        np.testing.assert_array_equal(got.scores, [item.score for item in want.items])
        assert got.fresh.tolist() == [item.reason == "fresh" for item in want.items]


def test_ties_with_the_pool_floor_give_the_same_scores() -> None:
    snap = snapshot(RerankConfig(diversity=0.2), ties=True)
    exact = RankingEngine(snap)
    order = held(snap)
    for context, query in contexts():
        want = exact.recommend(context, query)
        got = top_trending(order, snap, context, query)
        if got is None:  # more ties than a walk takes: the whole catalogue is ranked
            continue
        np.testing.assert_array_equal(got.scores, [item.score for item in want.items])
        blocked = context.seen_item_ids | context.dismissed_item_ids | query.exclude_item_ids
        assert not {snap.catalog.item_ids[i] for i in got.indices.tolist()} & blocked


def test_what_the_walk_leaves_to_the_whole_catalogue() -> None:
    snap = snapshot(RerankConfig())
    order = held(snap)
    context = domain.UserContext("u", True)
    by_category = domain.RecommendationQuery("u", 10, Algorithm.POPULAR, categories={"c1"})
    assert top_trending(order, snap, context, by_category) is None
    query = domain.RecommendationQuery("u", 10, Algorithm.POPULAR)
    assert top_trending(None, snap, context, query) is None
    # An order of other scores (an older snapshot's) is not used.
    assert top_trending((snap.trending.copy(), order[1]), snap, context, query) is None
    # Small catalogues keep no order; the engine then ranks them whole.
    assert trending_order(snap, None) is None
