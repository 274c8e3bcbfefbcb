"""The engine serves exactly the lists of the ranking it replaced (tests/rerank_reference.py).

Every source, with diversity and freshness on and off, with and without exclusions and category
filters, on catalogues whose scores are distinct and on ones full of equal scores (items the
model never trained on share their features' vector; trending counts repeat), for users with
history, strangers folded in from recent clicks, preference-only users and users with nothing.
Each user's queries are asked in a row through one memo (as the server's cached context has),
then again, so what is remembered from one query serves the next ones identically.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from recgrpc import domain
from recgrpc.domain import Algorithm
from recgrpc.model.artifact import RecommenderArrays
from recgrpc.model.catalog import CatalogIndex
from recgrpc.model.ranking import RankingConfig, RankingEngine, ServingSnapshot
from recgrpc.model.representations import ModelView
from recgrpc.model.rerank import RerankConfig
from recgrpc.model.user_memo import UserMemo
from tests.rerank_reference import reference_recommend

NOW = datetime(2026, 1, 1, tzinfo=UTC)
N_ITEMS = 7000  # above top_allowed's sampling threshold for a pool of 50
CATS = [f"c{c}" for c in range(12)]
TAGS = [f"t{t}" for t in range(10)]
Rows = list[tuple[str, list[str], list[str], datetime]]


def _rows(rng: np.random.Generator, ties: bool) -> Rows:
    rows = []
    for i in range(N_ITEMS):
        cats = [CATS[i % 12]] if i % 3 else [CATS[i % 12], CATS[(i + 5) % 12]]
        tags = [TAGS[i % 10]] if ties else [TAGS[i % 10], TAGS[(i // 10) % 10]]
        fresh = i % 7 == 0  # a seventh of the catalogue is days old: the boost can matter
        age = float(rng.uniform(0, 20 if fresh else 365))
        rows.append((f"item{i}", cats, tags, NOW - timedelta(days=age)))
    return rows


def _arrays(rows: Rows, rng: np.random.Generator, ties: bool, users: int) -> RecommenderArrays:
    """A random model; with ``ties`` a quarter of the items are untrained (scored by their
    features alone, which many items share)."""
    trained = [r for i, r in enumerate(rows) if not (ties and i % 4 == 0)]
    item_names = [f"item:{r[0]}" for r in trained] + [f"category:{c}" for c in CATS]
    item_names += [f"tag:{t}" for t in TAGS]
    user_names = [f"user:user{u}" for u in range(users)] + [f"preference:{c}" for c in CATS]
    index = {n: i for i, n in enumerate(item_names)}
    indptr, indices, data = [0], [], []
    for item_id, cats, tags, _ in trained:
        cols = [index[f"item:{item_id}"]] + [index[f"category:{c}"] for c in cats]
        cols += [index[f"tag:{t}"] for t in tags]
        indices += cols
        data += [1.0 / len(cols)] * len(cols)
        indptr.append(len(indices))
    dim = 8
    return RecommenderArrays(
        version="v-ties" if ties else "v-distinct",
        params={},
        user_ids=np.array([f"user{u}" for u in range(users)]),
        item_ids=np.array([r[0] for r in trained]),
        user_feature_names=np.array(user_names),
        item_feature_names=np.array(item_names),
        user_feature_embeddings=rng.normal(0, 0.5, (len(user_names), dim)).astype(np.float32),
        user_feature_biases=np.zeros(len(user_names), dtype=np.float32),
        item_feature_embeddings=rng.normal(0, 0.5, (len(item_names), dim)).astype(np.float32),
        item_feature_biases=rng.normal(0, 0.1, len(item_names)).astype(np.float32),
        item_features_indptr=np.array(indptr, dtype=np.int32),
        item_features_indices=np.array(indices, dtype=np.int32),
        item_features_data=np.array(data, dtype=np.float32),
        user_trained_until=np.full(users, NOW.timestamp() - 86400 * 30),
        user_train_weight=np.full(users, 10.0, dtype=np.float32),
        typical_user_norm=1.0,
        newest_event=NOW.timestamp(),
    )


def world(ties: bool, diversity: float, boost: float) -> ServingSnapshot:
    rng = np.random.default_rng(7 if ties else 8)
    rows = _rows(rng, ties)
    view = ModelView.build(_arrays(rows, rng, ties, users=20), rows)
    trending = rng.pareto(1.5, N_ITEMS).astype(np.float32)
    if ties:
        trending = np.floor(trending)  # mostly 0, 1 and 2
    config = RankingConfig(rerank=RerankConfig(diversity=diversity, freshness_boost=boost))
    return ServingSnapshot.assemble(
        CatalogIndex.build(rows), trending, NOW, model=view, config=config
    )


def _clicks(items: Sequence[int], hours: float) -> tuple[domain.RecentInteraction, ...]:
    at = NOW - timedelta(hours=hours)
    kind = domain.InteractionType.CLICK
    return tuple(domain.RecentInteraction(f"item{i}", kind, 0.0, at) for i in items)


def users() -> list[domain.UserContext]:
    rng = np.random.default_rng(3)
    seen = frozenset(f"item{i}" for i in rng.integers(0, N_ITEMS, 60))
    return [
        domain.UserContext(
            "user3", True, seen_item_ids=seen,
            dismissed_item_ids=frozenset({"item11", "item12", "gone"}),
            preferences={"c3": 1.0}, recent=_clicks(rng.integers(0, N_ITEMS, 5).tolist(), 2),
        ),
        domain.UserContext("user5", True, seen_item_ids=seen),
        domain.UserContext(
            "stranger", True, seen_item_ids=seen, recent=_clicks(rng.integers(0, N_ITEMS, 20), 1)
        ),
        domain.UserContext("prefs-only", True, preferences={"c2": 1.0, "c9": 0.5}),
        domain.UserContext("nobody", False),
    ]  # fmt: skip


EXCLUSIONS = [
    frozenset(),
    frozenset({"item0", "item1", "item7", "unknown-id"}),
    frozenset(f"item{i}" for i in range(0, N_ITEMS, 9)),  # hundreds, in every part of a pool
]
CATEGORIES = [frozenset(), frozenset({"c4"}), frozenset({"c1", "c8", "no-such-category"})]
SOURCES = [Algorithm.AUTO, Algorithm.HYBRID, Algorithm.COLLABORATIVE, Algorithm.CONTENT]
SOURCES.append(Algorithm.POPULAR)


def queries(user_id: str) -> list[domain.RecommendationQuery]:
    return [
        domain.RecommendationQuery(
            user_id, limit, source, exclude_item_ids=excluded, categories=cats
        )
        for source, excluded, cats, limit in itertools.product(
            SOURCES, EXCLUSIONS, CATEGORIES, (10, 3, 40)
        )
    ]


def _same(got: domain.RecommendationList, want: domain.RecommendationList, what: str) -> None:
    assert [(i.item_id, i.score, i.reason) for i in got.items] == [
        (i.item_id, i.score, i.reason) for i in want.items
    ], what
    assert (got.algorithm, got.model_version, got.fallback_reason) == (
        want.algorithm, want.model_version, want.fallback_reason
    ), what  # fmt: skip


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("diversity", [0.0, 0.3], ids=["no-diversity", "diversity"])
@pytest.mark.parametrize("boost", [0.0, 0.15], ids=["no-freshness", "freshness"])
def test_served_lists_are_those_of_the_reference_ranking(
    ties: bool, diversity: float, boost: float
) -> None:
    snap = world(ties, diversity, boost)
    engine = RankingEngine(snap)
    for context in users():
        asked = queries(context.user_id)
        expected = [reference_recommend(snap, context, q) for q in asked]
        for q, want in zip(asked, expected, strict=True):
            _same(engine.recommend(context, q), want, f"no memo: {context.user_id} {q}")
        memo = UserMemo()
        for round_ in ("first", "again"):
            for q, want in zip(asked, expected, strict=True):
                got = engine.recommend(context, q, memo=memo)
                _same(got, want, f"{round_} through the memo: {context.user_id} {q}")
        # Each query first on a memo of its own: what a context just read serves.
        for q, want in zip(asked[::7], expected[::7], strict=True):
            _same(engine.recommend(context, q, memo=UserMemo()), want, f"cold: {q}")


def test_a_memo_follows_a_model_swap_and_a_new_context() -> None:
    before, after = world(False, 0.0, 0.1), world(True, 0.3, 0.1)
    engine = RankingEngine(before)
    context = users()[0]
    memo = UserMemo()
    query = domain.RecommendationQuery(context.user_id, 10, Algorithm.HYBRID)
    _same(
        engine.recommend(context, query, memo=memo), reference_recommend(before, context, query), ""
    )
    engine.swap(after)
    _same(
        engine.recommend(context, query, memo=memo), reference_recommend(after, context, query), ""
    )
    dismissed = engine.recommend(context, query, memo=memo).items[0].item_id
    changed = domain.UserContext(
        context.user_id, True, seen_item_ids=context.seen_item_ids,
        dismissed_item_ids=context.dismissed_item_ids | {dismissed},
        preferences=context.preferences, recent=context.recent,
    )  # fmt: skip
    got = engine.recommend(changed, query, memo=memo)
    assert dismissed not in [i.item_id for i in got.items]
    _same(got, reference_recommend(after, changed, query), "a new context through an old memo")
