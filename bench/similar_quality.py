"""Similar-items quality on MovieLens ml-latest-small: hit rate@10 per mode beside popularity.

    python bench/similar_quality.py --data PATH/TO/ml-latest-small [--epochs 15] [--k 100]

Protocol: a rating of 4 or more is a positive. Each user's positives are ordered by time; the
newest 20% (at least one) are held out. For each user the query is their last positive item in
the training part; a hit is any held-out positive among the query item's top-10 list, with the
user's training items filtered out (as GetSimilarItems does when given the user). The lists come
from the same code the server ranks with (``recgrpc.model.similar``); BEHAVIOUR is run with each
co-occurrence measure; popularity is the 10 most-liked training items the user has not seen.
The data set is read in place, never copied.
"""

from __future__ import annotations

import argparse
import csv
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy import sparse

from recgrpc.model.catalog import CatalogIndex
from recgrpc.model.neighbour_artifact import NeighbourParams, build_neighbours
from recgrpc.model.neighbours import MEASURES
from recgrpc.model.recommender import HybridRecommender, TrainingParams
from recgrpc.model.similar import ItemText, SimilarityIndex, SimilarityMode, rank_similar

K = 10


Movies = dict[int, tuple[str, list[str]]]
Ratings = list[tuple[int, int, float, int]]


def load(data: Path) -> tuple[Movies, dict[int, set[str]], Ratings]:
    movies: dict[int, tuple[str, list[str]]] = {}
    with (data / "movies.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            genres = [] if row["genres"] == "(no genres listed)" else row["genres"].split("|")
            movies[int(row["movieId"])] = (row["title"], genres)
    tags: dict[int, set[str]] = {}
    with (data / "tags.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            tags.setdefault(int(row["movieId"]), set()).add(row["tag"].strip().lower())
    ratings = []
    with (data / "ratings.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            ratings.append(
                (
                    int(row["userId"]),
                    int(row["movieId"]),
                    float(row["rating"]),
                    int(row["timestamp"]),
                )
            )
    return movies, tags, ratings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args()

    movies, tags, ratings = load(args.data)
    item_ids = sorted(movies)
    pos = {m: i for i, m in enumerate(item_ids)}
    users = sorted({u for u, *_ in ratings})
    upos = {u: i for i, u in enumerate(users)}
    liked = sorted(
        ((upos[u], pos[m], t) for u, m, r, t in ratings if r >= 4 and m in pos),
        key=lambda x: (x[0], x[2]),
    )
    train: dict[int, list[tuple[int, int]]] = {}
    for u, i, t in liked:
        train.setdefault(u, []).append((i, t))
    test: dict[int, set[int]] = {}
    for u, events in list(train.items()):
        n_test = max(1, len(events) // 5)
        if len(events) < 2:
            continue
        test[u] = {i for i, _ in events[-n_test:]}
        train[u] = events[:-n_test]
    tr_user = np.array([u for u, ev in train.items() for _ in ev], dtype=np.int64)
    tr_item = np.array([i for ev in train.values() for i, _ in ev], dtype=np.int64)
    tr_time = np.array([t for ev in train.values() for _, t in ev], dtype=np.float64)
    texts = [(movies[m][0], movies[m][1], sorted(tags.get(m, ()))) for m in item_ids]
    str_ids = [str(m) for m in item_ids]
    catalog = CatalogIndex.build([(str(m), movies[m][1], [], _epoch()) for m in item_ids])

    # LightFM vectors for EMBEDDING: identity + genre features on the training positives.
    genres = sorted({g for _, gs in movies.values() for g in gs})
    feat_names = [f"item:{m}" for m in str_ids] + [f"category:{g}" for g in genres]
    gpos = {g: len(str_ids) + n for n, g in enumerate(genres)}
    rows, cols, vals = [], [], []
    for i, m in enumerate(item_ids):
        gs = movies[m][1]
        rows.append(i)
        cols.append(i)
        vals.append(0.5 if gs else 1.0)
        for g in gs:
            rows.append(i)
            cols.append(gpos[g])
            vals.append(0.5 / len(gs))
    item_features = sparse.csr_matrix((vals, (rows, cols)), shape=(len(str_ids), len(feat_names)))
    user_names = [f"user:{u}" for u in users]
    rec = HybridRecommender(
        TrainingParams(components=32), [str(u) for u in users], str_ids,
        user_feature_names=user_names, item_feature_names=feat_names,
        item_features=item_features,
        user_features=sparse.identity(len(users), dtype=np.float32, format="csr"),
    )  # fmt: skip
    inter = sparse.coo_matrix(
        (np.ones(tr_user.size, dtype=np.float32), (tr_user, tr_item)),
        shape=(len(users), len(str_ids)),
    )
    started = time.perf_counter()
    rec.fit_partial(inter, epochs=args.epochs, num_threads=2)
    fit_seconds = time.perf_counter() - started
    _, item_vectors = rec.item_representations()

    popularity = np.bincount(tr_item, minlength=len(str_ids)).astype(np.float32)
    results: dict[str, float] = {}
    build_seconds: dict[str, float] = {}
    for measure in MEASURES:
        started = time.perf_counter()
        arrays = build_neighbours(
            "bench",
            item_ids=str_ids,
            positives=(tr_user, tr_item),
            events=(tr_user, tr_item, tr_time),
            texts=texts,
            params=NeighbourParams(k=args.k, measure=measure),
        )
        build_seconds[measure] = time.perf_counter() - started
        index = SimilarityIndex.build(arrays, catalog, item_vectors)
        modes = [SimilarityMode.BEHAVIOUR]
        if measure == "asymmetric":
            modes += [SimilarityMode.CONTENT, SimilarityMode.EMBEDDING, SimilarityMode.AUTO]
        for mode in modes:
            label = (
                f"{mode.value.lower()} ({measure})"
                if mode in (SimilarityMode.BEHAVIOUR, SimilarityMode.AUTO)
                else mode.value.lower()
            )
            results[label] = _hit_rate(index, mode, train, test, str_ids, texts)
    results["popularity"] = _popularity_hit_rate(popularity, train, test)
    print(f"users evaluated: {len(test)}, items: {len(str_ids)}, positives: {tr_user.size}")
    print(f"LightFM fit ({args.epochs} epochs): {fit_seconds:.1f} s; neighbour build: "
          + ", ".join(f"{m} {s:.2f} s" for m, s in build_seconds.items()))  # fmt: skip
    print(f"{'source':<22} hit rate@{K}")
    for label, value in results.items():
        print(f"{label:<22} {value:.4f}")


def _epoch() -> datetime:
    return datetime(2016, 1, 1, tzinfo=UTC)


def _hit_rate(index, mode, train, test, ids, texts) -> float:  # type: ignore[no-untyped-def]
    hits = 0
    for u, held in test.items():
        seen = [i for i, _ in train[u]]
        query = seen[-1]
        title, cats, tags = texts[query]
        sources = index.sources(ItemText(ids[query], title, cats, tags), query)
        allowed = np.ones(index.catalog_size, dtype=np.bool_)
        allowed[seen] = False
        listed = rank_similar(sources, mode, allowed, K)
        hits += bool(held & set(listed.positions.tolist()))
    return hits / max(1, len(test))


def _popularity_hit_rate(popularity, train, test) -> float:  # type: ignore[no-untyped-def]
    hits = 0
    order = np.argsort(-popularity, kind="stable")
    for u, held in test.items():
        seen = {i for i, _ in train[u]}
        top = [i for i in order[: K + len(seen)].tolist() if i not in seen][:K]
        hits += bool(held & set(top))
    return hits / max(1, len(test))


if __name__ == "__main__":
    main()
