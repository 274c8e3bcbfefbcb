"""CSV import speed: rows/s for a generated interactions file on SQLite and PostgreSQL.

    python bench/import_speed.py [--rows 1000000] [--database-url postgresql://...]

Writes a CSV of ``--rows`` interactions (50k users, 20k items, half ISO-8601 and half Unix times,
no event_id column, so ids are derived from content), then imports it through
``recgrpc.jobs.importer.import_file`` - the code behind ``recgrpc import`` - into a fresh
SQLite file and, when ``--database-url`` or RECGRPC_TEST_DATABASE_URL names one, into that
PostgreSQL database (use a scratch database: the rows stay there). Each backend is imported
twice: the first run stores everything, the second finds every row already stored (the
idempotent re-run).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from recgrpc.db import Database, upgrade
from recgrpc.jobs.importer import ImportKind, import_file

TYPES = np.array(["view", "CLICK", "Like", "purchase", "rating", "ADD_TO_CART"])
TYPE_SHARE = np.array([0.62, 0.2, 0.08, 0.03, 0.04, 0.03])


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """A history file with realistic skew; written in blocks so memory stays small."""
    rng = np.random.default_rng(seed)
    end = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    with path.open("w", newline="") as out:
        out.write("user_id,item_id,type,value,occurred_at\n")
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            users = rng.integers(0, 50_000, n)
            items = np.minimum(rng.zipf(1.3, n), 20_000) - 1
            kinds = rng.choice(len(TYPES), n, p=TYPE_SHARE)
            values = np.where(TYPES[kinds] == "rating", rng.integers(1, 6, n), 0)
            seconds = (end - rng.uniform(0, 365 * 86_400, n)).astype(np.int64)
            iso = rng.random(n) < 0.5
            lines = []
            for u, i, k, v, s, as_iso in zip(
                users.tolist(),
                items.tolist(),
                kinds.tolist(),
                values.tolist(),
                seconds.tolist(),
                iso.tolist(),
                strict=True,
            ):
                when = datetime.fromtimestamp(s, UTC).isoformat() if as_iso else str(s)
                lines.append(f"u{u},i{i},{TYPES[k]},{v or ''},{when}\n")
            out.write("".join(lines))


def measure(url: str, path: Path, rows: int) -> None:
    upgrade(url)
    db = Database(url)
    backend = db.url.get_backend_name()
    try:
        for attempt in ("first import", "re-import"):
            started, cpu = time.perf_counter(), time.process_time()
            report = import_file(db, ImportKind.INTERACTIONS, path, progress=False)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            # CPU time of this process too: the machine may be shared with other work.
            print(
                f"{backend:<10} {attempt:<12} {rows:>9} rows in {elapsed:6.1f} s = "
                f"{rows / elapsed:>9,.0f} rows/s (this process's CPU {cpu:5.1f} s; "
                f"{report.new_rows} new, "
                f"{report.created_users} users and {report.created_items} items created)"
            )
    finally:
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=os.environ.get("RECGRPC_TEST_DATABASE_URL", ""))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "interactions.csv"
        started = time.perf_counter()
        write_csv(path, args.rows)
        size = path.stat().st_size / 1e6
        print(f"wrote {args.rows} rows ({size:.0f} MB) in {time.perf_counter() - started:.1f} s")
        measure(f"sqlite:///{Path(tmp) / 'import.db'}", path, args.rows)
        if args.database_url:
            measure(args.database_url, path, args.rows)


if __name__ == "__main__":
    main()
