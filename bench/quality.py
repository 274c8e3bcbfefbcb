"""Ranking quality measured through the service: CSV import -> recgrpc train -> serve -> gRPC.

    python bench/quality.py --dataset DIR [--seeds 1 2] [--json bench/results/quality.json]
    python bench/quality.py --demo [--users 3000 --items 2000 --interactions 100000]

``--dataset`` takes a MovieLens-style folder (``ratings.csv``, ``movies.csv``) and follows its
protocol (``bench/quality_data.py``). ``--demo`` splits the project's generated world the same
way (positives: LIKE/PURCHASE/ADD_TO_CART/BOOKMARK/SHARE and ratings >= 4). Either way the
training part goes in through ``recgrpc import``, the model is fitted by ``recgrpc train`` with
default settings (nothing per data set), ``recgrpc serve`` runs on a loopback port, and every
test user's list comes from GetRecommendations. Popularity and EASE are computed in the same run
on the same split. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness_load import free_port
from quality_data import Split, baselines, read_split, score_lists, write_import_files
from quality_demo import demo_split

from recgrpc.v1 import recommendation_pb2 as pb
from recgrpc.v1 import recommendation_pb2_grpc

CLI = (sys.executable, "-m", "recgrpc.cli")


def run_cli(url: str, *args: str, env: dict[str, str]) -> str:
    started = time.perf_counter()
    done = subprocess.run(
        [*CLI, "--database-url", url, "--log-level", "WARNING", *args],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"recgrpc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    print(f"  recgrpc {args[0]} {args[1] if len(args) > 1 else ''}: "
          f"{time.perf_counter() - started:.1f}s", flush=True)  # fmt: skip
    return done.stdout


def served_lists(
    url: str, users: list[str], env: dict[str, str]
) -> tuple[dict[str, list[str]], Counter[str]]:
    """Every user's 10 items from GetRecommendations (AUTO) on a fresh ``recgrpc serve``."""
    port = free_port()
    command = [*CLI, "--database-url", url, "--log-level", "WARNING", "serve", "--host",
               "127.0.0.1", "--port", str(port), "--metrics-port", "0",
               "--dashboard-port", "0"]  # fmt: skip
    proc = subprocess.Popen(command, env=env)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=900)  # a loaded machine starts slowly
        stub = recommendation_pb2_grpc.RecommendationServiceStub(channel)

        def ask(user: str) -> tuple[str, list[str], str]:
            for attempt in range(60):  # the first snapshot may still be loading the model
                reply = stub.GetRecommendations(
                    pb.GetRecommendationsRequest(user_id=user, limit=10), timeout=30
                )
                if reply.model_version or attempt == 59:
                    break
                time.sleep(0.5)
            reason = reply.recommendations[0].reason if reply.recommendations else "empty"
            return user, [r.item_id for r in reply.recommendations], reason

        ask(users[0])
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(ask, users))
        channel.close()
    finally:
        proc.terminate()
        proc.wait(30)
    return {u: items for u, items, _ in answers}, Counter(r for _, _, r in answers)


def one_seed(split: Split, seed: int, workdir: Path, extra_env: dict[str, str]) -> dict[str, Any]:
    url = f"sqlite:///{workdir / f'quality-{seed}.db'}"
    env = {**os.environ, **extra_env, "RECGRPC_SEED": str(seed)}
    items_csv, events_csv = write_import_files(split, workdir)
    run_cli(url, "migrate", env=env)
    run_cli(url, "import", "items", str(items_csv), "--quiet", env=env)
    run_cli(url, "import", "interactions", str(events_csv), "--quiet", env=env)
    train_output = run_cli(url, "train", env=env)
    print(train_output)
    users = sorted(split.test_positives)
    lists, reasons = served_lists(url, users, env)
    scores = score_lists(lists, split.test_positives, split.train_rated)
    return {"seed": seed, "service": scores.as_dict(), "reasons": dict(reasons),
            "train_output": train_output}  # fmt: skip


def table(rows: list[tuple[str, dict[str, float]]]) -> str:
    lines = [f"{'model':<34}{'P@10':>8}{'R@10':>8}{'NDCG@10':>9}"]
    for name, s in rows:
        lines.append(f"{name:<34}{s['precision']:>8.4f}{s['recall']:>8.4f}{s['ndcg']:>9.4f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--dataset", type=Path, help="folder with ratings.csv and movies.csv")
    where.add_argument("--demo", action="store_true", help="the generated demo world")
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--demo-seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="training seeds")
    parser.add_argument("--json", type=Path, default=Path("bench/results/quality.json"))
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="RECGRPC_NAME=VALUE",
        help="an environment setting for every command (ablations; the defaults otherwise)",
    )
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.setting)

    if args.dataset is not None:
        split, name = read_split(args.dataset), args.dataset.name
    else:
        split = demo_split(args.demo_seed, args.users, args.items, args.interactions)
        name = f"demo seed {args.demo_seed}"
    print(f"{name}: {len(split.train)} training ratings, {len(split.items)} items, "
          f"{len(split.test_positives)} users with test positives")  # fmt: skip
    anchors = {k: score_lists(v, split.test_positives, split.train_rated).as_dict()
               for k, v in baselines(split).items()}  # fmt: skip
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            print(f"seed {seed}:", flush=True)
            runs.append(one_seed(split, seed, Path(tmp), extra_env))
    rows = [(f"recgrpc through gRPC, seed {r['seed']}", r["service"]) for r in runs]
    mean = {
        k: sum(r["service"][k] for r in runs) / len(runs) for k in ("precision", "recall", "ndcg")
    }
    rows.append((f"recgrpc mean of {len(runs)} seeds", mean))
    rows += [(k, v) for k, v in anchors.items()]
    print(table(rows))
    for r in runs:
        print(f"seed {r['seed']} first-item reasons: {r['reasons']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "dataset": name, "settings": extra_env,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(), "users": len(split.test_positives),
        "runs": runs, "service_mean": mean, "anchors": anchors,
    }, indent=2))  # fmt: skip
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
