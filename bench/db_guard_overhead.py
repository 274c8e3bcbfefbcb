"""What bounding a database call costs when the database is healthy: ``DatabaseGuard.run``
(a hop to a database worker and back, with its deadline) against calling the work directly.

    python bench/db_guard_overhead.py [--calls 5000] [--rounds 5]

The work is empty, so the figure is the guard's own cost per call, the price every
request-path database read pays for never hanging on a stalled database.
"""

from __future__ import annotations

import argparse
import time

from recgrpc.server.db_guard import CircuitBreaker, DatabaseGuard


def per_call_us(call: object, calls: int) -> float:
    assert callable(call)
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    guard = DatabaseGuard(16, 0.5, CircuitBreaker(5, 1.0))

    def work() -> int:
        return 1

    try:
        per_call_us(lambda: guard.run(work), 1000)  # warm the workers
        guarded = [per_call_us(lambda: guard.run(work), args.calls) for _ in range(args.rounds)]
        direct = [per_call_us(work, args.calls) for _ in range(args.rounds)]
    finally:
        guard.close()
    print(
        f"guard.run: {min(guarded):.1f} us per call (best of {args.rounds}), "
        f"median {sorted(guarded)[len(guarded) // 2]:.1f} us; direct {min(direct):.2f} us"
    )


if __name__ == "__main__":
    main()
