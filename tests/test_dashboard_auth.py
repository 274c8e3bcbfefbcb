"""With bearer tokens configured, every dashboard page refuses a missing or wrong token and
accepts the right one (header or the sign-in form's cookie), in a real browser and through
``recgrpc serve`` itself."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright
from werkzeug.test import Client

from recgrpc.config import Settings
from recgrpc.dashboard import DashboardServer
from recgrpc.dashboard.sources import Sources
from recgrpc.dashboard.web import DashboardApp
from recgrpc.server import RunningServer, create_server
from recgrpc.server.interceptors import TokenSet, load_tokens
from tests.dashboard_world import launch_chromium
from tests.test_lifecycle import free_port, wait_for

pytestmark = pytest.mark.slow

TOKEN = "dashboard-secret-1"
PAGES = ("/", "/models", "/users", "/items", "/users?user_id=someone", "/items?item_id=something")


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# operators\n{TOKEN}\nother-token\n")
    return path


@pytest.fixture
def guarded(settings: Settings, tokens_file: Path) -> Iterator[tuple[RunningServer, str]]:
    running = create_server(settings.replace(auth_tokens_file=str(tokens_file)))
    dashboard = DashboardServer(
        running.handlers, "127.0.0.1", 0, tokens=TokenSet(load_tokens(tokens_file))
    )
    try:
        assert running.wait_ready(30)
        yield running, f"http://127.0.0.1:{dashboard.port}"
    finally:
        dashboard.close()
        running.stop(grace=1)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


def test_every_page_refuses_a_missing_or_wrong_token_and_accepts_the_right_one(
    guarded: tuple[RunningServer, str], browser: Browser
) -> None:
    _, url = guarded
    for headers, status in (
        ({}, 401),
        ({"Authorization": "Bearer wrong-token"}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": f"Bearer {TOKEN}"}, 200),
    ):
        context = browser.new_context(java_script_enabled=False, extra_http_headers=headers)
        page = context.new_page()
        for path in PAGES:
            response = page.goto(url + path)
            assert response is not None
            # Past the gate, the inspectors answer an unknown id with 404 and a message.
            expected = 404 if status == 200 and "?" in path else status
            assert response.status == expected, (path, headers)
            main = page.locator("main").inner_text()
            if status == 401:
                assert page.locator("input#token").count() == 1, path
                assert "Sign in" in page.title()
                assert "items in the catalogue" not in main
                wrong = "Bearer wrong-token" in headers.values()
                assert ("That token is not accepted." in main) is wrong, (path, headers)
            else:
                assert page.locator("input#token").count() == 0, path
        context.close()


def test_sign_in_form_sets_a_secure_cookie_and_sign_out_clears_it(
    guarded: tuple[RunningServer, str], browser: Browser
) -> None:
    _, url = guarded
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    response = page.goto(url + "/models")
    assert response is not None
    assert response.status == 401
    page.fill("#token", "not-the-token")
    page.click("form.login button[type=submit]")
    assert "That token is not accepted." in page.locator("main").inner_text()
    assert context.cookies() == []

    page.fill("#token", TOKEN)
    page.click("form.login button[type=submit]")
    page.wait_for_url(url + "/models")
    assert page.locator("h1").inner_text() == "Models"
    (cookie,) = context.cookies()
    assert cookie["value"] == TOKEN
    assert cookie["secure"] is True
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    for path in PAGES:
        response = page.goto(url + path)
        assert response is not None
        assert response.status == (404 if "?" in path else 200), path

    page.click("form.logout button[type=submit]")
    page.wait_for_url(url + "/login")
    assert context.cookies() == []
    response = page.goto(url + "/")
    assert response is not None
    assert response.status == 401

    context.add_cookies([{**cookie, "value": "forged"}])
    response = page.goto(url + "/")
    assert response is not None
    assert response.status == 401
    context.close()


def test_sign_in_only_returns_to_pages_of_the_dashboard(guarded: tuple[RunningServer, str]) -> None:
    running, _ = guarded
    client = Client(DashboardApp(Sources(running.handlers), TokenSet([TOKEN])))
    for target, location in (
        ("/users?user_id=u1", "/users?user_id=u1"),
        ("//elsewhere.example/", "/"),
        ("https://elsewhere.example/", "/"),
        ("models", "/"),
    ):
        response = client.post("/login", data={"token": TOKEN, "next": target})
        assert response.status_code == 303
        assert response.headers["Location"] == location, target
    assert client.post("/login", data={"token": "x" * 10_000}).status_code == 413


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_recgrpc_serve_runs_the_dashboard_behind_the_tokens(
    database_url: str, tokens_file: Path, tmp_path: Path
) -> None:
    port, dashboard_port = free_port(), free_port()
    command = [
        *(sys.executable, "-m", "recgrpc.cli", "--database-url", database_url, "serve"),
        *("--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0"),
        *("--dashboard-port", str(dashboard_port)),
    ]
    env = {**os.environ, "RECGRPC_AUTH_TOKENS_FILE": str(tokens_file)}
    with (tmp_path / "server.log").open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:

        def answers() -> bool:
            try:
                _get(dashboard_port, "/")
            except OSError:
                return False
            return True

        wait_for(answers, 60, "the dashboard to answer")
        status, body = _get(dashboard_port, "/")
        assert status == 401
        assert 'name="token"' in body
        status, body = _get(dashboard_port, "/", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        assert "items in the catalogue" in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        with pytest.raises(OSError):
            _get(dashboard_port, "/")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
