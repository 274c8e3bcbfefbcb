"""Three ways to send a batch of rows to PostgreSQL, side by side: JSON recordset, unnest, COPY.

    python bench/pg_batches.py --database-url postgresql://... [--sizes 8,64,1000] [--rounds 5]

Each round inserts the same generated rows (the columns of a stored top-N row: text, integer,
float, timestamptz, boolean) into a temporary table once per method, methods interleaved so the
machine's load hits them alike, and reports per method the median wall time and process CPU per
row, and each one's ratio to JSON. What ``db.postgres`` sends is JSON (see its docstring).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

COLUMNS = "user_id text, item_id text, rank integer, score double precision, " \
    "generated_at timestamptz, is_clicked boolean"  # fmt: skip
NAMES = ("user_id", "item_id", "rank", "score", "generated_at", "is_clicked")


def rows(n: int) -> list[tuple[Any, ...]]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        (f"user-{i // 20:06d}", f"item-{i:07d}", i % 20 + 1, 1.0 / (i + 1),
         start + timedelta(seconds=i), False)
        for i in range(n)
    ]  # fmt: skip


def by_json(cur: psycopg.Cursor[Any], batch: list[tuple[Any, ...]]) -> None:
    payload = json.dumps(
        [dict(zip(NAMES, (*r[:4], r[4].isoformat(), r[5]), strict=True)) for r in batch]
    )
    cur.execute(
        f"INSERT INTO batch SELECT * FROM json_to_recordset(%s::json) AS t({COLUMNS})",
        (payload,),
    )


def by_unnest(cur: psycopg.Cursor[Any], batch: list[tuple[Any, ...]]) -> None:
    columns = [list(c) for c in zip(*batch, strict=True)]
    cur.execute(
        "INSERT INTO batch SELECT * FROM unnest(%s::text[], %s::text[], %s::integer[],"
        " %s::double precision[], %s::timestamptz[], %s::boolean[])",
        columns,
    )


def by_copy(cur: psycopg.Cursor[Any], batch: list[tuple[Any, ...]]) -> None:
    # What a staging COPY costs: the rows copied into a staging table, then moved.
    with cur.copy(sql.SQL("COPY staging ({}) FROM STDIN").format(
        sql.SQL(", ").join(map(sql.Identifier, NAMES))
    )) as copy:  # fmt: skip
        for row in batch:
            copy.write_row(row)
    cur.execute("INSERT INTO batch SELECT * FROM staging")
    cur.execute("TRUNCATE staging")


METHODS = {"json": by_json, "unnest": by_unnest, "copy": by_copy}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--sizes", default="8,64,1000,20000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = args.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TEMPORARY TABLE batch ({COLUMNS})")
        cur.execute(f"CREATE TEMPORARY TABLE staging ({COLUMNS})")
        print(f"{'rows':>7} {'method':<7} {'wall ms':>9} {'CPU us/row':>11} {'wall/json':>10}")
        for size in (int(s) for s in args.sizes.split(",")):
            batch = rows(size)
            walls: dict[str, list[float]] = {m: [] for m in METHODS}
            cpus: dict[str, list[float]] = {m: [] for m in METHODS}
            repeats = max(1, 2000 // size)
            for _ in range(args.rounds):
                for name, send in METHODS.items():
                    wall, cpu = time.perf_counter(), time.process_time()
                    for _ in range(repeats):
                        send(cur, batch)
                    walls[name].append((time.perf_counter() - wall) / repeats)
                    cpus[name].append((time.process_time() - cpu) / repeats / size)
                    cur.execute("TRUNCATE batch")
            base = statistics.median(walls["json"])
            for name in METHODS:
                wall = statistics.median(walls[name])
                print(
                    f"{size:>7} {name:<7} {wall * 1e3:>9.3f} "
                    f"{statistics.median(cpus[name]) * 1e6:>11.2f} {wall / base:>10.2f}"
                )


if __name__ == "__main__":
    main()
