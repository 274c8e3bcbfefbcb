"""Churn quality through the service: history in through the CLI, `recgrpc train-churn`, its table.

    python bench/churn.py --dataset DIR [--json bench/results/churn_DIRNAME.json]
    python bench/churn.py --demo [--users 3000 --items 2000 --interactions 100000 --seed 42]

``--dataset`` takes a MovieLens-style folder (``ratings.csv``, ``movies.csv``), read where it
is: every rating goes in through ``recgrpc import`` (RATING events at their timestamps) and the
movies as items. ``--demo`` loads the generated world with ``recgrpc demo``. Then
``recgrpc train-churn`` runs with its defaults (as of where the history ends, 30-day horizon):
it fits every candidate family on the earlier cut-offs, scores each on the held-out later one
beside recency alone and keeps the best. This prints those held-out figures as stored with the
model (and train-churn's own report), and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import quality
from quality_data import Split, read_ratings, write_import_files

from recgrpc.db import Database, model_store

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = (("logistic", "logistic regression"), ("trees", "gradient-boosted trees, depth 3"))


def run_cli(url: str, *args: str) -> str:
    return quality.run_cli(url, *args, env=dict(os.environ))


def whole_history(folder: Path) -> Split:
    """Every rating of the data set (churn needs the whole history, no ranking split)."""
    items, by_user = read_ratings(folder)
    train = [
        (user, item, kind, value, at)
        for user, events in by_user.items()
        for at, item, kind, value in events
    ]
    return Split(items=items, train=train, test_positives={})


def stored_metrics(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    db = Database(url)
    try:
        with db.reader() as session:
            version = model_store.active_model_version(session, model_store.CHURN)
            stored = model_store.load_model(session, version or "")
    finally:
        db.dispose()
    if stored is None:
        raise RuntimeError("train-churn stored no model")
    return dict(stored.params), dict(stored.metrics)


def table(params: dict[str, Any], metrics: dict[str, Any]) -> str:
    recency = metrics["baseline"]
    lines = [
        f"held-out cut-off {params['evaluation_cutoff'][:10]}, {metrics['evaluation_rows']} "
        f"users, churn rate {metrics['evaluation_churn_rate']:.3f}",
        "| candidate | ROC-AUC | ROC-AUC active <= 30 d | log loss | vs recency |",
        "|---|---|---|---|---|",
    ]
    for key, label in (*ROWS, ("recency", "recency alone")):
        m = recency if key == "recency" else metrics["candidates"][key]
        mark = " (selected)" if key == params["family"] else ""
        lines.append(
            f"| {label}{mark} | {m['roc_auc']:.3f} | {m['roc_auc_recently_active']:.3f} | "
            f"{m['log_loss']:.3f} | {m['roc_auc'] - recency['roc_auc']:+.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", type=Path, help="a MovieLens-style folder")
    source.add_argument("--demo", action="store_true", help="the generated demo world")
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args()

    name = "demo" if args.demo else args.dataset.resolve().name
    with tempfile.TemporaryDirectory() as workdir:
        url = f"sqlite:///{Path(workdir) / 'churn.db'}"
        run_cli(url, "migrate")
        if args.demo:
            sizes = {"--seed": args.seed, "--users": args.users, "--items": args.items,
                     "--interactions": args.interactions}  # fmt: skip
            run_cli(url, "demo", *(str(v) for pair in sizes.items() for v in pair))
        else:
            items_csv, events_csv = write_import_files(whole_history(args.dataset), Path(workdir))
            run_cli(url, "import", "items", str(items_csv), "--quiet")
            run_cli(url, "import", "interactions", str(events_csv), "--quiet")
        report = run_cli(url, "train-churn")
        params, metrics = stored_metrics(url)
    print("\n" + report)
    print(f"\n{name}:\n{table(params, metrics)}")
    out = args.json or RESULTS / f"churn_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "dataset": name,
        "demo": {"users": args.users, "items": args.items,
                 "interactions": args.interactions, "seed": args.seed} if args.demo else None,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average": os.getloadavg()[0]},
        "selected": params["family"],
        "params": params,
        "metrics": metrics,
    }  # fmt: skip
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
