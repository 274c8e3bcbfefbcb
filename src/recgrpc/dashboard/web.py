"""The dashboard's WSGI application: routes, bearer-token sign-in, page rendering.

Read-only: GET pages, plus POST for signing in and out. With tokens configured every page needs
one, sent as ``Authorization: Bearer <token>`` or held in the cookie the sign-in form sets
(HttpOnly, Secure, SameSite=Strict); tokens are checked by the gRPC API's ``TokenSet``.
Pages carry no JavaScript; the Content-Security-Policy forbids scripts altogether.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from recgrpc.dashboard import charts
from recgrpc.dashboard.inspectors import ALGORITHMS, item_page, user_page
from recgrpc.dashboard.overview import models_page, overview, series_name
from recgrpc.dashboard.sources import Sources
from recgrpc.server.errors import is_database_outage

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from recgrpc.server.interceptors import TokenSet

log = logging.getLogger(__name__)

COOKIE = "recgrpc_dashboard_token"
MAX_FORM_BYTES = 4096
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
PAGES = (
    ("overview", "/", "Overview"),
    ("models", "/models", "Models"),
    ("users", "/users", "Users"),
    ("items", "/items", "Items"),
)

Page = Callable[[Request], Response]


def _when(value: datetime | None) -> str:
    return "—" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("recgrpc.dashboard", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        pct=charts.percent,
        num=lambda v: f"{v:,}" if isinstance(v, int) else f"{v:,.4g}",
        score=lambda v: f"{v:.4f}",
        when=_when,
        series=series_name,
    )
    return env


class DashboardApp:
    """WSGI callable. ``tokens`` None: no authentication (only when the API has none either)."""

    def __init__(self, sources: Sources, tokens: TokenSet | None, concurrency: int = 4) -> None:
        self.sources = sources
        self.tokens = tokens
        self.env = templates()
        self.css = resources.files(__package__).joinpath("static/dashboard.css").read_bytes()
        # Pages share the server's database pool with the RPCs: a burst of page loads waits
        # here instead of taking every connection.
        self._slots = threading.BoundedSemaphore(concurrency)
        self.routes = Map(
            [
                Rule("/", endpoint="overview", methods=["GET"]),
                Rule("/models", endpoint="models", methods=["GET"]),
                Rule("/users", endpoint="users", methods=["GET"]),
                Rule("/items", endpoint="items", methods=["GET"]),
                Rule("/login", endpoint="login", methods=["GET", "POST"]),
                Rule("/logout", endpoint="logout", methods=["POST"]),
                Rule("/static/dashboard.css", endpoint="css", methods=["GET"]),
            ]
        )
        self.pages: dict[str, Page] = {
            "overview": self.overview,
            "models": self.models,
            "users": self.users,
            "items": self.items,
            "login": self.login,
            "logout": self.logout,
            "css": self.stylesheet,
        }

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        request.max_form_memory_size = MAX_FORM_BYTES
        request.max_content_length = MAX_FORM_BYTES
        response = self.respond(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response(environ, start_response)

    def respond(self, request: Request) -> Response:
        try:
            endpoint, _ = self.routes.bind_to_environ(request.environ).match()
            if endpoint not in {"login", "css"} and not self.signed_in(request):
                return self.login_form(request, status=401)
            with self._slots:
                return self.pages[str(endpoint)](request)
        except NotFound:
            return self.render(
                "message.html",
                request,
                status=404,
                title="Not found",
                message="There is no such page.",
            )
        except HTTPException as exc:
            return exc.get_response()
        except Exception as exc:
            if is_database_outage(exc):
                log.warning("dashboard page not rendered: database unavailable")
                message = "The database is unavailable; try again shortly."
                return self.render(
                    "message.html", request, status=503, title="Unavailable", message=message
                )
            log.exception("dashboard page %s failed", request.path)
            return self.render(
                "message.html",
                request,
                status=500,
                title="Error",
                message="This page could not be built; the server log says why.",
            )

    # -- authentication -------------------------------------------------------------------

    def presented_token(self, request: Request) -> str | None:
        scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return request.cookies.get(COOKIE) or None

    def signed_in(self, request: Request) -> bool:
        if self.tokens is None:
            return True
        token = self.presented_token(request)
        return token is not None and self.tokens.accepts(token)

    def login_form(self, request: Request, status: int, message: str = "") -> Response:
        if not message and self.presented_token(request) is not None:
            message = "That token is not accepted."
        here = request.full_path.rstrip("?")
        target = here if request.path != "/login" else request.values.get("next", "/")
        response = self.render(
            "login.html",
            request,
            status=status,
            title="Sign in",
            message=message,
            next=_local(target),
        )
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="recgrpc dashboard"'
        return response

    def login(self, request: Request) -> Response:
        if self.tokens is None:
            return redirect("/", code=303)
        if request.method == "GET":
            return self.login_form(request, status=200)
        token = request.form.get("token", "").strip()
        if not token or not self.tokens.accepts(token):
            response = self.login_form(request, status=401, message="That token is not accepted.")
            response.delete_cookie(COOKIE, path="/")
            return response
        response = redirect(_local(request.form.get("next", "/")), code=303)
        response.set_cookie(COOKIE, token, path="/", secure=True, httponly=True, samesite="Strict")
        return response

    def logout(self, request: Request) -> Response:
        response = redirect("/login" if self.tokens is not None else "/", code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
        return response

    # -- pages ----------------------------------------------------------------------------

    def render(
        self, template: str, request: Request, *, status: int = 200, **context: Any
    ) -> Response:
        page = self.env.get_template(template).render(
            pages=PAGES, path=request.path, auth=self.tokens is not None, **context
        )
        return Response(page, status=status, mimetype="text/html")

    def overview(self, request: Request) -> Response:
        return self.render("overview.html", request, title="Overview", **overview(self.sources))

    def models(self, request: Request) -> Response:
        return self.render("models.html", request, title="Models", **models_page(self.sources))

    def users(self, request: Request) -> Response:
        user_id = request.args.get("user_id", "").strip()
        algorithm = request.args.get("algorithm", "AUTO").strip().upper() or "AUTO"
        raw_limit = request.args.get("limit", "").strip()
        max_limit = self.sources.handlers.settings.max_limit
        limit = int(raw_limit) if raw_limit.isdigit() else 0
        problem = ""
        if algorithm not in ALGORITHMS:
            problem = f"algorithm must be one of {', '.join(ALGORITHMS)}"
        elif raw_limit and not 1 <= limit <= max_limit:
            problem = f"limit must be a whole number within 1..{max_limit}"
        if problem:
            page = user_page(self.sources, "", "AUTO", 0)
            page.update(user_id=user_id, message=problem, status=400)
        else:
            page = user_page(self.sources, user_id, algorithm, limit)
        status = int(page.pop("status", 200))
        return self.render("user.html", request, status=status, title="User inspector", **page)

    def items(self, request: Request) -> Response:
        page = item_page(self.sources, request.args.get("item_id", "").strip())
        status = int(page.pop("status", 200))
        return self.render("item.html", request, status=status, title="Item inspector", **page)

    def stylesheet(self, request: Request) -> Response:
        response = Response(self.css, mimetype="text/css")
        response.headers["Cache-Control"] = "max-age=3600"
        return response


def _local(target: str) -> str:
    """``target`` if it is a path on this site, else ``/`` (no open redirects after sign-in)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target
