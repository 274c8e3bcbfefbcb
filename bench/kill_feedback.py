"""Feedback and interactions across SIGKILLs: acknowledged calls vs rows stored.

    python bench/kill_feedback.py --db postgresql+psycopg://... [--kills 3] [--threads 8] [--runs 3]

Runs tests/kill_load.py's scenario (a real ``recgrpc serve`` killed with SIGKILL and restarted
under load; failed calls resent until acknowledged) on an empty database and prints, per run,
how many acknowledged calls there were, how many rows they left and how many were stored twice
or lost. The database's recgrpc tables are emptied before each run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the scenario lives in tests/

from recgrpc.db import Database, upgrade
from recgrpc.db.models import Base
from tests.kill_load import run


def _empty(url: str) -> None:
    upgrade(url)
    db = Database(url)
    try:
        with db.writer() as session:
            for table in reversed(Base.metadata.sorted_tables):
                session.execute(table.delete())
    finally:
        db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="database URL (its tables are emptied)")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--log", type=Path, help="append the servers' logs to this file")
    args = parser.parse_args()
    for n in range(args.runs):
        _empty(args.db)
        report = run(args.db, kills=args.kills, threads=args.threads, seed=n, log_path=args.log)
        print(f"run {n + 1}:")
        for line in report.lines():
            print(f"  {line}")
        for error in report.errors[:5]:
            print(f"  error: {error}")


if __name__ == "__main__":
    main()
