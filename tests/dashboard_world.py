"""A small trained demo world behind a real server and dashboard, for the browser tests and
`make screenshots`: the project's demo generator, real training, real RPCs for served lists."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from playwright.sync_api import Browser, Playwright

from recgrpc.client import RecommendationClient
from recgrpc.config import Settings
from recgrpc.dashboard import Capabilities, DashboardServer
from recgrpc.db import Database
from recgrpc.jobs.churn_scoring import ActiveChurnModel
from recgrpc.jobs.churn_training import default_as_of, train_churn
from recgrpc.jobs.demo import DemoData, generate_demo, write_demo
from recgrpc.jobs.train import train
from recgrpc.server import RunningServer, create_server
from recgrpc.server.interceptors import TokenSet

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parent.parent
# `make screenshots` names the README's folder; tests save one folder per backend otherwise.
SCREENSHOTS_FOR_README = os.environ.get("RECGRPC_SCREENSHOTS_DIR", "")
SCREENSHOTS = Path(SCREENSHOTS_FOR_README or ROOT / "bench/results/screenshots")
SMALL = {"n_users": 300, "n_items": 200, "n_interactions": 12_000}
SERVED_USERS = 40
"""Users who get a list through GetRecommendations (a HYBRID series with a model version)."""
VISITORS = 8
"""Unknown users asking for a list: trending, with a fallback reason."""


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless; Playwright's own browser builds are never used."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@dataclass
class World:
    database_url: str
    db: Database
    demo: DemoData
    server: RunningServer
    dashboard: DashboardServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard.port}"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


def seed(database_url: str, sizes: dict[str, int] = SMALL, seed_value: int = 3) -> DemoData:
    """Demo data, a trained recommender and churn model, and every user's churn risk recorded."""
    db = Database(database_url)
    try:
        now = datetime.now(UTC)
        data = generate_demo(seed=seed_value, now=now, **sizes)
        write_demo(db, data)
        settings = Settings(database_url=database_url)
        # Three runs: an under-trained second model (kept as a candidate unless it happens to be
        # as good), then a forced third, so the Models page has every status to show.
        for epochs, force in ((5, False), (1, False), (5, True)):
            train(db, settings, progress=False, epochs=epochs, force=force, write_lists=False)
        with db.reader() as session:
            as_of = default_as_of(session, now)
        train_churn(db, as_of=as_of, horizon_days=30, now=now)
        scorer = ActiveChurnModel(0.35, 0.65)
        scorer.refresh(db)
        with db.writer() as session:
            scorer.score_all(session, as_of)
        return data
    finally:
        db.dispose()


def serve_some_lists(target: str, data: DemoData, users: int = SERVED_USERS) -> None:
    """Lists served through GetRecommendations (clicks on the first item of every third), and
    some to visitors nobody knows yet."""
    with RecommendationClient(target, timeout=10) as client:
        for n in range(VISITORS):
            client.get_recommendations(f"visitor-{n}", limit=5)
        for n, user in enumerate(data.users[:users]):
            served = client.get_recommendations(user.user_id, limit=5)
            if n % 3 == 0 and served.items:
                client.submit_feedback(
                    user.user_id, served.items[0].item_id, recset_id=served.recset_id,
                    clicked=True,
                )  # fmt: skip


@contextlib.contextmanager
def running_world(
    database_url: str,
    *,
    tokens: TokenSet | None = None,
    capabilities: Capabilities | None = None,
    sizes: dict[str, int] = SMALL,
) -> Iterator[World]:
    data = seed(database_url, sizes)
    settings = Settings(
        database_url=database_url, host="127.0.0.1", port=0, metrics_port=0, refresh_seconds=0.5
    )
    server = create_server(settings)
    db = Database(database_url)
    dashboard = None
    try:
        assert server.wait_ready(30), "server never became ready"
        serve_some_lists(f"127.0.0.1:{server.port}", data)
        # Served lists are stored behind the replies: the pages must count every one of them.
        server.handlers.served_lists.flush()
        dashboard = DashboardServer(
            server.handlers, "127.0.0.1", 0, tokens=tokens, capabilities=capabilities
        )
        yield World(database_url, db, data, server, dashboard)
    finally:
        if dashboard is not None:
            dashboard.close()
        server.stop(grace=1)
        db.dispose()
