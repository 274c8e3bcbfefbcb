"""The dashboard in a real browser (Debian's Chromium, JavaScript off) against a real server on
a trained demo world, on each database backend: the numbers shown are checked against the
database, the user inspector's form is submitted, and every page is saved as a screenshot."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import func, select
from werkzeug.test import Client

from recgrpc import domain
from recgrpc.client import RecommendationClient
from recgrpc.dashboard import Capabilities
from recgrpc.dashboard.sources import Sources
from recgrpc.dashboard.web import DashboardApp
from recgrpc.db import models as m
from recgrpc.db.queries import count_rows
from recgrpc.errors import NotFound
from tests.conftest import BACKENDS, module_database_url
from tests.dashboard_world import (
    SCREENSHOTS,
    SCREENSHOTS_FOR_README,
    World,
    launch_chromium,
    running_world,
)

pytestmark = pytest.mark.slow


def screenshot(page: Page, world: World, name: str) -> None:
    backend = "sqlite" if world.database_url.startswith("sqlite") else "postgresql"
    folder = SCREENSHOTS if SCREENSHOTS_FOR_README else SCREENSHOTS / backend
    path = folder / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)


@pytest.fixture(scope="module", params=BACKENDS)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    with running_world(module_database_url(request, tmp_path_factory, "dashboard")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # No JavaScript: every page must work with plain HTML forms and inline SVG.
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def number(text: str) -> int:
    return int(text.replace(",", "").strip())


def percent(value: float) -> str:
    return f"{value * 100:.1f} %"


def test_overview_shows_the_database_counts_ctr_and_churn_levels(world: World, page: Page) -> None:
    response = page.goto(world.url + "/")
    assert response is not None
    assert response.status == 200
    db = world.db
    with db.reader() as s:
        expected = {
            "items": count_rows(s, m.Item, active=True),
            "users": count_rows(s, m.User),
            "interactions": count_rows(s, m.Interaction),
            "lists": count_rows(s, m.Impression),
            "feedback": count_rows(s, m.Feedback),
        }
    for stat, count in expected.items():
        shown = page.locator(f'[data-stat="{stat}"] .value').inner_text()
        assert number(shown) == count, stat
    assert expected["interactions"] == len(world.demo.interactions)

    # Events per hour: the bars add up to the events since the chart's first hour.
    since = datetime.fromisoformat(page.locator("#events").get_attribute("data-since") or "")
    with db.reader() as s:
        recent = s.scalar(select(func.count()).where(m.Interaction.occurred_at >= since))
    bars = page.locator("#events-chart rect.bar")
    values = bars.evaluate_all("els => els.map(e => Number(e.getAttribute('data-value')))")
    assert len(values) == 7 * 24
    assert sum(values) == recent > 0

    # CTR per algorithm and model version: clicked items over items shown, from the raw rows.
    since = datetime.fromisoformat(page.locator("#online").get_attribute("data-since") or "")
    with db.reader() as s:
        lists = s.execute(
            select(m.Impression.recset_id, m.Impression.algorithm, m.Impression.model_version,
                   m.Impression.item_ids).where(m.Impression.served_at >= since)
        ).all()  # fmt: skip
        clicked = set(
            s.execute(
                select(m.Feedback.recset_id, m.Feedback.item_id).where(
                    m.Feedback.clicked.is_(True), m.Feedback.created_at >= since
                )
            ).all()
        )
    shown: Counter[tuple[str, str]] = Counter()
    clicks: Counter[tuple[str, str]] = Counter()
    for recset_id, algorithm, version, item_ids in lists:
        shown[(algorithm, version)] += len(item_ids)
        clicks[(algorithm, version)] += sum((recset_id, i) in clicked for i in item_ids)
    assert {a for a, _ in shown} >= {"POPULAR", "HYBRID"}
    rows = page.locator("#online-table tbody tr")
    assert rows.count() == len(shown)
    for (algorithm, version), items in shown.items():
        row = page.locator(
            f'#online-table tr[data-algorithm="{algorithm}"][data-model="{version}"]'
        )
        assert row.locator("td.ctr").inner_text() == percent(clicks[(algorithm, version)] / items)
    assert page.locator("#ctr-chart circle").count() > 0

    # Churn: users by the level of their latest recorded prediction.
    with db.reader() as s:
        predictions = s.execute(
            select(m.ChurnPrediction.user_id, m.ChurnPrediction.level)
            .order_by(m.ChurnPrediction.predicted_at, m.ChurnPrediction.id)
        ).all()  # fmt: skip
    latest = Counter(dict(predictions).values())
    assert sum(latest.values()) == len({u for u, _ in predictions}) > 0
    for level in ("LOW", "MEDIUM", "HIGH"):
        cell = page.locator(f'#churn-table tr[data-level="{level}"] td.num').first
        assert number(cell.inner_text()) == latest.get(level, 0), level
    screenshot(page, world, "overview")


def test_models_page_lists_every_model_with_its_status_and_decision(
    world: World, page: Page
) -> None:
    page.goto(world.url + "/models")
    with world.db.reader() as s:
        stored = s.execute(
            select(m.ModelArtifact.kind, m.ModelArtifact.version, m.ModelArtifact.status,
                   m.ModelArtifact.metrics)
        ).all()  # fmt: skip
    assert {kind for kind, *_ in stored} == {"recommender", "churn"}
    assert page.locator("article.model").count() == len(stored)
    for kind, version, status, metrics in stored:
        article = page.locator(f'article.model[data-version="{version}"]')
        assert article.get_attribute("data-status") == status
        why = article.locator(".why").inner_text()
        if kind == "recommender":
            assert why.startswith(metrics["decision"])
            ndcg = article.locator('tr[data-metric="ndcg"] td.num').first.inner_text()
            assert float(ndcg) == pytest.approx(metrics["model"]["ndcg"], abs=1e-4)
        else:
            roc = article.locator('tr[data-metric="roc_auc"] td.num').first.inner_text()
            assert float(roc) == pytest.approx(metrics["roc_auc"], abs=1e-4)
    serving = page.locator("article.model:has(.badge.serving)")
    assert (
        serving.get_attribute("data-version") == world.server.handlers.engine.snapshot.model_version
    )
    statuses = {status for kind, _, status, _ in stored if kind == "recommender"}
    assert "retired" in statuses
    assert "active" in statuses
    for version, status in ((v, st) for k, v, st, _ in stored if st == "retired"):
        why = page.locator(f'article.model[data-version="{version}"] .why').inner_text()
        assert re.search(r"; retired when \S+ was activated$", why), (version, status, why)
    screenshot(page, world, "models")


def test_user_inspector_form_shows_the_live_list_and_churn_risk_and_records_nothing(
    world: World, page: Page
) -> None:
    user = world.demo.users[0]
    with world.db.reader() as s:
        before = (count_rows(s, m.Impression), count_rows(s, m.ChurnPrediction))
    page.goto(world.url + "/users")
    page.fill("#user_id", user.user_id)
    page.select_option("#algorithm", "HYBRID")
    page.fill("#limit", "8")
    page.click("form.lookup button[type=submit]")
    page.wait_for_url(re.compile(r"/users\?user_id="))
    assert page.locator("#profile-user").inner_text() == user.user_id
    shown = page.locator("#rec-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.getAttribute('data-item'))"
    )
    with world.db.reader() as s:
        after = (count_rows(s, m.Impression), count_rows(s, m.ChurnPrediction))
        history = count_rows(s, m.Interaction, user_id=user.user_id)
    assert after == before, "the inspector recorded an impression or a churn prediction"

    with RecommendationClient(world.target, timeout=10) as client:
        served = client.get_recommendations(user.user_id, limit=8, algorithm="HYBRID")
        churn = client.predict_churn(user.user_id)
    assert shown == served.item_ids
    assert len(shown) == 8
    assert page.locator("#rec-algorithm").inner_text() == served.algorithm.value
    first = page.locator("#rec-table tbody tr").first.locator("td.num").nth(1).inner_text()
    assert float(first) == pytest.approx(served.items[0].score, abs=1e-4)
    assert page.locator("#churn-level").inner_text() == churn.level.value
    risk = float(page.locator("#churn-risk").inner_text().rstrip(" %")) / 100
    assert risk == pytest.approx(churn.risk, abs=0.002)
    assert page.locator("#history-table tbody tr").count() == min(history, 20)
    assert page.locator("#preferences tbody tr").count() == len(user.preferences)
    # Sections that need capabilities this build does not wire are absent, not broken.
    assert page.locator("#similar").count() == 0
    screenshot(page, world, "user")


def test_unknown_user_gets_a_clear_message_on_the_inspector_page(world: World, page: Page) -> None:
    page.goto(world.url + "/users")
    page.fill("#user_id", "nobody-by-this-name")
    with page.expect_response(re.compile(r"/users\?")) as reply:
        page.click("form.lookup button[type=submit]")
    assert reply.value.status == 404
    message = page.locator("#user-message").inner_text()
    assert message == "No user 'nobody-by-this-name' is known: no profile, preferences or history."
    assert page.locator("#user_id").input_value() == "nobody-by-this-name"
    assert page.locator("#recommendations").count() == 0
    screenshot(page, world, "user-unknown")


def test_item_inspector_shows_metadata_and_popularity_from_the_database(
    world: World, page: Page
) -> None:
    with world.db.reader() as s:
        item_id, events = s.execute(
            select(m.Interaction.item_id, func.count()).group_by(m.Interaction.item_id)
            .order_by(func.count().desc()).limit(1)
        ).one()  # fmt: skip
    page.goto(world.url + "/items")
    page.fill("#item_id", item_id)
    page.click("form.lookup button[type=submit]")
    item = next(i for i in world.demo.items if i.item_id == item_id)
    assert page.locator("#meta-item").inner_text() == item_id
    assert page.locator("#meta-categories").inner_text() == ", ".join(item.categories)
    assert number(page.locator("#item-total").inner_text()) == events
    assert re.fullmatch(r"\d+ of \d+", page.locator("#meta-trending").inner_text().replace(",", ""))
    bars = page.locator("#item-chart rect.bar").evaluate_all(
        "els => els.map(e => Number(e.getAttribute('data-value')))"
    )
    assert len(bars) == 90
    assert 0 < sum(bars) <= events
    page.goto(world.url + "/items?item_id=no-such-item")
    assert (
        "No item 'no-such-item' is in the catalogue." in page.locator("#item-message").inner_text()
    )
    page.goto(world.url + f"/items?item_id={item_id}")
    screenshot(page, world, "item")


def test_capability_sections_appear_when_a_source_is_given(world: World) -> None:
    """Similar items and user stats come from capabilities a build may wire in; with a source
    given, the inspectors show them (the source here: items sharing a first category)."""
    catalogue = {i.item_id: i for i in world.demo.items}

    def same_category(item_id: str, mode: str, limit: int) -> list[domain.ScoredItem]:
        if item_id not in catalogue:
            raise NotFound(f"no item {item_id!r}")
        first = catalogue[item_id].categories[0]
        peers = [i for i in catalogue.values() if first in i.categories and i.item_id != item_id]
        return [domain.ScoredItem(i.item_id, 1.0, mode) for i in peers[:limit]]

    capabilities = Capabilities(
        similar_items=same_category, user_stats=lambda user_id: {"served": 3, "ctr": 0.5}
    )
    client = Client(DashboardApp(Sources(world.server.handlers, capabilities), tokens=None))
    user = world.demo.users[0].user_id
    html = client.get(f"/users?user_id={user}").get_data(as_text=True)
    assert 'id="similar"' in html
    assert "Similar to " in html
    assert 'id="user-stats"' in html
    assert "<dt>served</dt><dd>3</dd>" in html
    item_id = world.demo.items[0].item_id
    html = client.get(f"/items?item_id={item_id}").get_data(as_text=True)
    for mode in capabilities.neighbour_modes:
        assert f'data-title="Neighbours by {mode}"' in html
    peer = same_category(item_id, "content", 1)[0].item_id
    assert f'href="/items?item_id={peer}"' in html


def test_bad_parameters_and_unknown_pages_answer_with_a_message(world: World, page: Page) -> None:
    for path, status, text in (
        ("/users?user_id=u&limit=100000", 400, "limit must be a whole number within 1..100"),
        ("/users?user_id=u&algorithm=MAGIC", 400, "algorithm must be one of"),
        ("/users?user_id=" + "x" * 200, 400, "A user id must be at most 128 characters"),
        ("/no-such-page", 404, "There is no such page."),
    ):
        response = page.goto(world.url + path)
        assert response is not None
        assert response.status == status, path
        assert text in page.locator("main").inner_text(), path
