"""Tricks against rate limits and error details, counted on a real server.

    python bench/hostile_calls.py [--calls 200]

1. Rate limit 5/s (burst 5), no authentication: ``--calls`` GetRecommendations, each with a
   fresh random ``Bearer <uuid>``: how many are admitted.
2. The same limit with bearer tokens on: 60 reflection calls (``list services``) with random
   tokens, and ``--calls`` GetRecommendations with wrong tokens: how many answer
   UNAUTHENTICATED (token guessing) and how long they took.
3. UpsertItems with 50 to 2000 invalid items (two bad fields each) through the typed client,
   on a server without rate limits: the error class, code and number of field violations the
   caller receives.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from recgrpc.client import Item, RecGrpcError, RecommendationClient
from recgrpc.config import Settings
from recgrpc.db import upgrade
from recgrpc.server import create_server
from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc as pb_grpc


def code_of(call: Callable[[], object]) -> str:
    try:
        call()
    except grpc.RpcError as exc:
        return str(exc.code().name)  # type: ignore[attr-defined]
    return "OK"


def list_services() -> Iterator[reflection_pb2.ServerReflectionRequest]:
    yield reflection_pb2.ServerReflectionRequest(list_services="")


def start(tmp: Path, name: str, **changes: object) -> tuple[object, str]:
    url = f"sqlite:///{tmp / name}.db"
    upgrade(url)
    limits: dict[str, object] = {"rate_limit_per_second": 5.0, "rate_limit_burst": 5}
    settings = Settings.from_env(
        {}, database_url=url, host="127.0.0.1", port=0, metrics_port=0, dashboard_port=0
    ).replace(**{**limits, **changes})
    running = create_server(settings)
    assert running.wait_ready(30)
    return running, f"127.0.0.1:{running.port}"


def random_tokens(target: str, calls: int) -> Counter[str]:
    with grpc.insecure_channel(target) as channel:
        rec = pb_grpc.RecommendationServiceStub(channel)
        ask = pb.GetRecommendationsRequest(user_id="u1")
        return Counter(
            code_of(
                lambda: rec.GetRecommendations(
                    ask, metadata=[("authorization", f"Bearer {uuid.uuid4()}")], timeout=5
                )
            )
            for _ in range(calls)
        )


def reflection_calls(target: str, calls: int) -> Counter[str]:
    with grpc.insecure_channel(target) as channel:
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)

        def once() -> None:
            for _ in refl.ServerReflectionInfo(
                list_services(),
                metadata=[("authorization", f"Bearer {uuid.uuid4()}")],
                timeout=5,
            ):
                pass

        return Counter(code_of(once) for _ in range(calls))


def big_bad_request(target: str, count: int) -> str:
    items = [Item(item_id=" " * (k % 3 + 1), title="x" * 600) for k in range(count)]
    with RecommendationClient(target, max_attempts=1) as client:
        try:
            client.upsert_items(items)
        except RecGrpcError as exc:
            violations = getattr(exc, "field_violations", ())
            last = violations[-1].description if violations else ""
            return (
                f"{type(exc).__name__} {exc.code.name}, {len(violations)} violations"
                f" (last: {last[:40]!r})"
            )
    return "accepted"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        open_server, target = start(tmp, "open")
        print(f"no auth, 5/s: random bearer per call: {dict(random_tokens(target, args.calls))}")
        open_server.stop(grace=1)  # type: ignore[attr-defined]

        unlimited, target = start(tmp, "unlimited", rate_limit_per_second=0.0)
        for count in (50, 100, 150, 500, 2000):
            print(f"UpsertItems with {count} bad items: {big_bad_request(target, count)}")
        unlimited.stop(grace=1)  # type: ignore[attr-defined]

        tokens = tmp / "tokens"
        tokens.write_text("the-real-token\n")
        auth_server, target = start(tmp, "auth", auth_tokens_file=str(tokens))
        reflected = reflection_calls(target, 60)
        print(f"auth, 5/s: 60 reflection calls, random tokens: {dict(reflected)}")
        started = time.perf_counter()
        wrong = random_tokens(target, args.calls)
        took = time.perf_counter() - started
        print(f"auth, 5/s: {args.calls} wrong tokens: {dict(wrong)} in {took:.1f}s")
        auth_server.stop(grace=1)  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
