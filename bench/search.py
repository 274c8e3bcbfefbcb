"""SearchItems' text relevance: the in-memory BM25 index (bm25s) beside the databases' own
full-text search, on the demo catalogue.

    python bench/search.py [--items 10000,100000] [--queries 300] [--postgres URL]

For each catalogue size: time to build the index, and per-query latency (p50/p99) of the top 10
for one- to three-word queries, for

- bm25s: what the server uses (``recgrpc.model.search.SearchIndex``: stems, accent folding,
  categories weighted up), scores for every item then the top 10 with numpy;
- SQLite FTS5: a virtual table with the porter/unicode61 tokenizer (accents removed), ranked by
  its built-in ``bm25()``, in memory;
- PostgreSQL (with ``--postgres``): a ``tsvector`` column with a GIN index, ``to_tsquery`` of the
  words OR-ed, ranked by ``ts_rank`` (term frequency, no BM25 length/IDF weighting).

It also prints how many of bm25s' top 10 FTS5 returns too (both are BM25 over stems).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import time

import numpy as np

from recgrpc.jobs.demo import generate_demo
from recgrpc.model.search import SearchIndex, best_matches, document_tokens

WORDS = ["jazz", "guide", "live", "rock", "classical", "documentary", "hiking", "quiet",
         "cooking", "travel", "urban", "golden", "radio", "kit", "soul", "guitar"]  # fmt: skip


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e3, ordered[int(0.99 * (len(ordered) - 1))] * 1e3


def run(n_items: int, n_queries: int, postgres: str) -> None:
    data = generate_demo(7, n_users=50, n_items=n_items, n_interactions=500)
    rows = [(it.item_id, it.title, list(it.categories), list(it.tags)) for it in data.items]
    rng = random.Random(5)
    queries = [" ".join(rng.sample(WORDS, rng.randint(1, 3))) for _ in range(n_queries)]
    print(f"\n{n_items} items, {n_queries} queries")

    started = time.perf_counter()
    index = SearchIndex.build(rows)
    built = time.perf_counter() - started
    times, ours = [], []
    everything = np.ones(len(index), dtype=np.bool_)
    for q in queries:
        t = time.perf_counter()
        top = best_matches(index.scores(q), everything, 10)
        times.append(time.perf_counter() - t)
        ours.append({index.item_ids[i] for i in top.tolist()})
    print(f"  bm25s      build {built:6.2f}s  query p50 {percentiles(times)[0]:6.2f} ms"
          f"  p99 {percentiles(times)[1]:6.2f} ms")  # fmt: skip

    conn = sqlite3.connect(":memory:")
    started = time.perf_counter()
    conn.execute(
        "CREATE VIRTUAL TABLE docs USING fts5(item_id UNINDEXED, body,"
        " tokenize = 'porter unicode61 remove_diacritics 2')"
    )
    conn.executemany(
        "INSERT INTO docs (item_id, body) VALUES (?, ?)",
        [(r[0], " ".join(document_tokens(r[1], r[2], r[3]))) for r in rows],
    )
    conn.commit()
    built = time.perf_counter() - started
    times, overlap = [], []
    for q, mine in zip(queries, ours, strict=True):
        match = " OR ".join(f'"{w}"' for w in q.split())
        t = time.perf_counter()
        found = conn.execute(
            "SELECT item_id FROM docs WHERE docs MATCH ? ORDER BY bm25(docs) LIMIT 10", (match,)
        ).fetchall()
        times.append(time.perf_counter() - t)
        overlap.append(len(mine & {f[0] for f in found}) / max(1, len(mine)))
    print(f"  FTS5       build {built:6.2f}s  query p50 {percentiles(times)[0]:6.2f} ms"
          f"  p99 {percentiles(times)[1]:6.2f} ms  top-10 shared with bm25s "
          f"{statistics.mean(overlap):.0%}")  # fmt: skip

    if postgres:
        import psycopg  # noqa: PLC0415 - only with --postgres

        with psycopg.connect(postgres.replace("postgresql+psycopg", "postgresql")) as pg:
            started = time.perf_counter()
            pg.execute("CREATE TEMP TABLE docs (item_id text, body text, v tsvector)")
            with pg.cursor().copy("COPY docs (item_id, body) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row((r[0], " ".join([r[1], *r[2], *r[2], *r[3]])))
            pg.execute("UPDATE docs SET v = to_tsvector('english', body)")
            pg.execute("CREATE INDEX ON docs USING gin (v)")
            pg.execute("ANALYZE docs")
            built = time.perf_counter() - started
            times = []
            for q in queries:
                tsq = " | ".join(q.split())
                t = time.perf_counter()
                pg.execute(
                    "SELECT item_id FROM docs, to_tsquery('english', %s) AS q WHERE v @@ q"
                    " ORDER BY ts_rank(v, q) DESC LIMIT 10",
                    (tsq,),
                ).fetchall()
                times.append(time.perf_counter() - t)
            print(f"  PostgreSQL build {built:6.2f}s  query p50 {percentiles(times)[0]:6.2f} ms"
                  f"  p99 {percentiles(times)[1]:6.2f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="10000,100000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--postgres", default="", help="a PostgreSQL URL to compare with")
    args = parser.parse_args()
    for n in (int(x) for x in args.items.split(",")):
        run(n, args.queries, args.postgres)


if __name__ == "__main__":
    main()
