"""Server CPU per GetRecommendations call: no tracing code, tracing off, tracing on.

    python bench/tracing_overhead.py [--items 10000] [--calls 100] [--rounds 30]

One SQLite world (bench/recommend_latency.py's catalogue and random model, active, and 200
users with 50 clicks each) is served by four server processes side by side:

- none: this source tree with the tracing hooks taken out (each ``with tracing.span(...)``
  replaced by its body, the lines that only feed a span removed), i.e. the code as it would be
  without tracing;
- off: this tree as shipped, ``RECGRPC_OTLP_ENDPOINT`` unset (the default);
- on: ``RECGRPC_OTLP_ENDPOINT`` pointing at a collector in this process that accepts and drops
  every export; every call sampled (the default ratio, 1.0);
- none2: a second server of the ``none`` code, the control: its ratio to ``none`` is the noise
  floor of this run, the spread any difference must stand out of.

Each round sends ``--calls`` sequential GetRecommendations (HYBRID, AUTO and CONTENT in turn)
from one typed client to each server in turn (the order rotates), and reads the server
process's own CPU time (all its threads: RPC threads, group-commit writers, span export) before
and after. Prints microseconds per call for each variant and the median of each variant's
round-by-round ratio to ``none``, so drift on a shared machine hits all of them alike.

On a busy machine the processes' CPU times wander by more than the 2 % the hooks are allowed,
so the run also times, in this process, exactly what the hooks of one call execute with
tracing off (four ``with tracing.span(...)`` with their attribute dicts, a ``set_attribute`` on
the do-nothing span, a batch-size store) and prints it as a share of the ``none`` median.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent import futures
from pathlib import Path
from typing import IO, Any

import grpc

# bench/ is the script's folder, so on the path: the world recommend_latency.py serves.
from recommend_latency import seed_served_world

import recgrpc
from recgrpc import tracing
from recgrpc.client import RecommendationClient

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# The lines that exist only to feed a span (group_commit's batch size per item).
TRACING_ONLY_ATTRIBUTES = frozenset({"batch_size"})

SERVER = textwrap.dedent(
    """
    import sys, time
    import recgrpc
    from recgrpc.config import Settings
    from recgrpc.server import create_server

    running = create_server(Settings.from_env())
    assert running.wait_ready(120), "server never became ready"
    print(running.port, recgrpc.__file__, flush=True)
    for line in sys.stdin:
        if line.strip() == "cpu":
            print(time.process_time(), flush=True)
        else:
            break
    running.stop(grace=1)
    """
)


# ``with tracing.span(...)`` in the server; ``with self._span(...)`` in the ranking engine,
# which is handed ``tracing.span`` (model/ never imports the tracing module).
HOOKS = {("tracing", "span"), ("self", "_span")}


def _is_tracing_span(item: ast.withitem) -> bool:
    call = item.context_expr
    return (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and isinstance(call.func.value, ast.Name)
        and (call.func.value.id, call.func.attr) in HOOKS
    )


class _StripTracing(ast.NodeTransformer):
    """Unwraps ``with tracing.span(...)`` and drops the statements that only feed a span."""

    def __init__(self) -> None:
        self.span_names: set[str] = set()
        self.removed = 0

    def visit_With(self, node: ast.With) -> Any:
        hooks = [item for item in node.items if _is_tracing_span(item)]
        for item in hooks:
            if isinstance(item.optional_vars, ast.Name):
                self.span_names.add(item.optional_vars.id)
        self.removed += len(hooks)
        self.generic_visit(node)
        kept = [item for item in node.items if not _is_tracing_span(item)]
        if kept:
            node.items = kept
            return node
        return node.body or [ast.Pass()]

    def visit_Expr(self, node: ast.Expr) -> Any:
        call = node.value
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name)
            and call.func.value.id in self.span_names
        ):
            self.removed += 1
            return None
        return node

    def visit_Assign(self, node: ast.Assign) -> Any:
        if all(
            isinstance(t, ast.Attribute) and t.attr in TRACING_ONLY_ATTRIBUTES for t in node.targets
        ):
            self.removed += 1
            return None
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> Any:  # the dataclass field itself
        if isinstance(node.target, ast.Name) and node.target.id in TRACING_ONLY_ATTRIBUTES:
            self.removed += 1
            return None
        return node


def untraced_tree(destination: Path) -> int:
    """Copy this tree's ``recgrpc`` package to ``destination`` without the tracing hooks."""
    source = Path(recgrpc.__file__).resolve().parent
    target = destination / "recgrpc"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    removed = 0
    for path in target.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        calls = [f"{name}.{attr}(" for name, attr in HOOKS]
        if not any(call in text for call in calls):
            continue
        stripper = _StripTracing()
        tree = ast.fix_missing_locations(stripper.visit(ast.parse(text)))
        stripped = ast.unparse(tree)
        assert not any(call in stripped for call in calls), path
        path.write_text(stripped + "\n", encoding="utf-8")
        removed += stripper.removed
    return removed


class Sink:
    """An OTLP/gRPC trace receiver that counts and drops what it is sent."""

    def __init__(self) -> None:
        self.exports = 0
        self.bytes = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.unary_unary_rpc_method_handler(
            self._export, request_deserializer=None, response_serializer=None
        )
        service, method = EXPORT_METHOD.strip("/").split("/")
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {method: handler}),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.exports += 1
        self.bytes += len(request)
        return b""  # an empty ExportTraceServiceResponse: all accepted


class ServerProcess:
    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        first = self._stdout().readline().split()
        if not first:
            raise RuntimeError(f"{name} server did not start")
        self.port, self.package = int(first[0]), first[1]

    def _stdout(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def cpu(self) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write("cpu\n")
        self.proc.stdin.flush()
        return float(self._stdout().readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class _Pending:
    batch_size = 0


def hooks_off_seconds(repeat: int = 200_000) -> float:
    """Seconds of CPU for the tracing hooks of one GetRecommendations call, tracing off."""
    pending = _Pending()
    source = "HYBRID"
    start = time.process_time()
    for _ in range(repeat):
        with tracing.span("recgrpc.user_context"):
            pass
        with tracing.span("recgrpc.score", {"recgrpc.algorithm": source}):
            pass
        with tracing.span("recgrpc.rerank", {"recgrpc.algorithm": source}):
            pass
        with tracing.span("recgrpc.group_commit", {"recgrpc.writer": "served-list-writer"}) as s:
            s.set_attribute("recgrpc.batch_size", pending.batch_size)
        pending.batch_size = 1
    return (time.process_time() - start) / repeat


def calls(client: RecommendationClient, count: int, users: int, limit: int) -> None:
    algorithms = ("HYBRID", "AUTO", "CONTENT")
    for k in range(count):
        recs = client.get_recommendations(
            f"user{k % users}", limit=limit, algorithm=algorithms[k % 3]
        )
        assert recs.model_version == "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=100, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--limit", type=int, default=10)
    args = parser.parse_args()
    users = 200
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/tracing.db"
        seed_served_world(url, args.items, 1000, 64, users)
        removed = untraced_tree(Path(tmp) / "untraced")
        sink = Sink()
        base = {k: v for k, v in os.environ.items() if not k.startswith("RECGRPC_")}
        base.update(
            RECGRPC_DATABASE_URL=url,
            RECGRPC_HOST="127.0.0.1",
            RECGRPC_PORT="0",
            RECGRPC_METRICS_PORT="0",
            RECGRPC_DASHBOARD_PORT="0",
            RECGRPC_REFRESH_SECONDS="3600",
            RECGRPC_LOG_LEVEL="WARNING",
        )
        untraced_path = os.pathsep.join(
            p for p in (str(Path(tmp) / "untraced"), os.environ.get("PYTHONPATH")) if p
        )
        envs = {
            "none": {**base, "PYTHONPATH": untraced_path},
            "off": base,
            "on": {**base, "RECGRPC_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.port}"},
            "none2": {**base, "PYTHONPATH": untraced_path},
        }
        servers = {name: ServerProcess(name, env) for name, env in envs.items()}
        for name in ("none", "none2"):
            assert servers[name].package.startswith(tmp), servers[name].package
        clients = {n: RecommendationClient(f"127.0.0.1:{s.port}") for n, s in servers.items()}
        per_call: dict[str, list[float]] = {name: [] for name in servers}
        try:
            for name in servers:  # warm-up: caches, lazy imports, first connections
                calls(clients[name], 200, users, args.limit)
            names = list(servers)
            for round_ in range(args.rounds):
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    before = servers[name].cpu()
                    calls(clients[name], args.calls, users, args.limit)
                    used = servers[name].cpu() - before
                    per_call[name].append(used / args.calls * 1e6)
        finally:
            for client in clients.values():
                client.close()
            for server in servers.values():
                server.close()
            sink.server.stop(0)
    load = os.getloadavg()[0]
    print(
        f"GetRecommendations, server process CPU per call: {args.items} items, limit "
        f"{args.limit}, {args.rounds} rounds x {args.calls} calls per variant (load {load:.1f}); "
        f"'none' has {removed} tracing hooks taken out"
    )
    print(f"{'variant':>8} {'median us':>10} {'min':>8} {'max':>8}   vs none: median [p25 p75]")
    for name, values in per_call.items():
        ratios = [v / n for v, n in zip(values, per_call["none"], strict=True)]
        p25, p50, p75 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        print(
            f"{name:>8} {statistics.median(values):>10.1f} {min(values):>8.1f} "
            f"{max(values):>8.1f}   {p50:.3f} [{p25:.3f} {p75:.3f}]"
        )
    print(f"spans exported by 'on': {sink.exports} OTLP requests, {sink.bytes / 1e6:.1f} MB")
    hooks = min(hooks_off_seconds() for _ in range(3)) * 1e6
    share = hooks / statistics.median(per_call["none"]) * 100
    print(f"hooks of one call with tracing off, timed in-process: {hooks:.2f} us = {share:.3f} %")


if __name__ == "__main__":
    main()
