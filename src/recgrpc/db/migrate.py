"""Alembic, driven from code so ``recgrpc migrate`` needs no alembic.ini on disk."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from recgrpc.db.engine import normalise_url


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", "recgrpc.db:migrations")
    # '%' would be read as interpolation by configparser.
    rendered = normalise_url(url).render_as_string(hide_password=False).replace("%", "%%")
    config.set_main_option("sqlalchemy.url", rendered)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (creating tables on a new database)."""
    command.upgrade(alembic_config(url), revision)
