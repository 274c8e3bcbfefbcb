"""``recgrpc bench``: runs the repository's benchmark harness (``bench/harness.py``).

Benchmarks are not part of the installed package: the harness lives in the repository's
``bench/`` with the other benchmarks, and this command finds it beside the ``src/`` directory
recgrpc was installed from (``pip install -e .``, ``make install``). Elsewhere the command says
so in one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
NOT_A_CHECKOUT = (
    "recgrpc bench runs the benchmark harness of a source checkout (bench/harness.py); this "
    "installation has none: clone the repository and run `make install`, then `recgrpc bench`"
)


def _bench_module(name: str) -> ModuleType | None:
    """``bench/<name>.py`` of the checkout, or None outside a checkout."""
    if not (BENCH_DIR / f"{name}.py").is_file():
        return None
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))  # the harness imports its sibling modules by name
    return importlib.import_module(name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The harness's options on ``recgrpc bench`` (only its options module is imported, so
    ``recgrpc --help`` stays fast), when there is a harness."""
    options = _bench_module("harness_options")
    if options is not None:
        options.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the harness with the parsed options; exit code 2 outside a checkout."""
    harness = _bench_module("harness")
    if harness is None:
        print(f"recgrpc: {NOT_A_CHECKOUT}", file=sys.stderr)
        return 2
    code: int = harness.run(args)
    return code
