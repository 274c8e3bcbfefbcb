"""``recgrpc similar ITEM``: asks a running server for an item's neighbours and prints them
(what GetSimilarItems returns, for support staff and for checking a model by eye)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from recgrpc.client import NotFoundError, RecGrpcError, RecommendationClient
from recgrpc.config import Settings


def add_similar_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    p = command("similar", "print an item's similar items, as GetSimilarItems returns them")
    p.add_argument("item", help="the item id")
    p.add_argument(
        "--target", help="server host:port (default: 127.0.0.1 and RECGRPC_PORT)", default=None
    )
    p.add_argument(
        "--mode",
        choices=["auto", "behaviour", "content", "embedding"],
        default="auto",
        help="what similar means",
    )
    p.add_argument("--limit", type=int, default=10, help="how many items (at most 100)")
    p.add_argument("--user", default="", help="filter and re-order for this user")
    p.add_argument(
        "--category", action="append", default=[], help="only items in this category (repeatable)"
    )
    p.add_argument("--token", default=None, help="bearer token, when the server requires one")
    p.set_defaults(func=cmd_similar)


def cmd_similar(args: argparse.Namespace, settings: Settings) -> int:
    target = args.target or f"127.0.0.1:{settings.port}"
    with RecommendationClient(target, token=args.token, max_attempts=1) as client:
        try:
            found = client.similar_items(
                args.item,
                limit=args.limit,
                mode=args.mode,
                user_id=args.user,
                categories=args.category,
            )
        except NotFoundError:
            print(f"recgrpc: item {args.item!r} is not in the catalogue", file=sys.stderr)
            return 1
        except RecGrpcError as exc:
            print(f"recgrpc: {target}: {exc}", file=sys.stderr)
            return 2
    print(
        f"items similar to {args.item} (mode {found.mode.value.lower()}, "
        f"model {found.model_version or 'none'}, recset {found.recset_id})"
    )
    if found.fallback_reason:
        print(f"fallback: {found.fallback_reason}")
    width = max([len("item"), *(len(i.item_id) for i in found.items)])
    print(f"{'rank':>4}  {'item'.ljust(width)}  {'score':>8}  reason")
    for item in found.items:
        print(f"{item.rank:>4}  {item.item_id.ljust(width)}  {item.score:>8.4f}  {item.reason}")
    return 0
