"""The ``recgrpc`` command's help (defaults shown, no reStructuredText) and the one-line messages
for failures an operator can fix: a taken port, an unusable database, a client-only install."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from recgrpc.config import ENV_PREFIX, Settings

# Importing these fails in a client-only install (no ``server`` extra).
SERVER_MODULES = frozenset(
    {
        "alembic",
        "faiss",
        "grpc_health",
        "grpc_reflection",
        "grpc_status",
        "lightfm",
        "numpy",
        "prometheus_client",
        "psycopg",
        "scipy",
        "sklearn",
        "sqlalchemy",
        "threadpoolctl",
        "tqdm",
    }
)
PORT_FLAGS = {
    "port": "--port or RECGRPC_PORT",
    "metrics_port": "--metrics-port or RECGRPC_METRICS_PORT (0 turns the endpoint off)",
    "dashboard_port": "--dashboard-port or RECGRPC_DASHBOARD_PORT (0 turns the dashboard off)",
}


def display_url(url: str) -> str:
    from recgrpc.db import normalise_url  # noqa: PLC0415 - SQLAlchemy: server extra only

    return normalise_url(url).render_as_string(hide_password=True)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default (unless its help already says it, or there is none) and
    prints help written as reStructuredText without its backticks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = (action.help or "").replace("`", "")
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"

    def _format_text(self, text: str) -> str:
        return super()._format_text(text.replace("`", ""))


def setting_help(text: str, name: str) -> str:
    """Help for a flag that overrides a setting: its variable and built-in default."""
    default = getattr(Settings(), name)
    shown = str(default).lower() if isinstance(default, bool) else default
    return f"{text} (default: {ENV_PREFIX}{name.upper()}, else {shown})"


def global_options(defaults: Any) -> argparse.ArgumentParser:
    """--database-url and --log-level, for the top-level parser and every subcommand."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--database-url",
        default=defaults,
        help=setting_help(
            "SQLAlchemy URL, sqlite:///FILE or postgresql+psycopg://...", "database_url"
        ),
    )
    options.add_argument(
        "--log-level", default=defaults, help=setting_help("DEBUG, INFO, WARNING, ...", "log_level")
    )
    return options


def operator_problem(exc: BaseException, settings: Settings) -> str | None:
    """A one-line explanation for a failure the operator can fix; None for anything else."""
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").partition(".")[0] in (
        SERVER_MODULES
    ):
        return (
            f"this command runs the server side, whose dependencies are not installed (no module "
            f'named {exc.name!r}); install them with: pip install "recgrpc[server]"'
        )
    ports = sys.modules.get("recgrpc.server.ports")  # not imported: not what failed
    if ports is not None and isinstance(exc, ports.PortUnavailable):
        return f"{exc}; choose another with {PORT_FLAGS.get(exc.setting, exc.setting)}"
    return _database_problem(exc, settings)


def _database_problem(exc: BaseException, settings: Settings) -> str | None:
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is None or not isinstance(exc, sa_exc.DBAPIError | sa_exc.TimeoutError):
        return None
    where = display_url(settings.database_url)
    cause = str(getattr(exc, "orig", None) or exc).strip()
    first_line = cause.splitlines()[0] if cause else type(exc).__name__
    missing_table = getattr(getattr(exc, "orig", None), "sqlstate", None) == "42P01"
    if missing_table or "no such table" in first_line:
        return f"the database at {where} has no recgrpc schema yet: run recgrpc migrate first"
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return f"cannot use the database at {where}: {first_line}"
    return None
