"""Benchmark harness: ``python bench/harness.py --help`` (same as ``recgrpc bench``).

The code lives in ``recgrpc.bench`` so the installed ``recgrpc bench`` command can run it too.
"""

from recgrpc.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
