"""Storage: SQLAlchemy 2 models, the engine/session factory, queries and Alembic migrations."""

from recgrpc.db.engine import Database, normalise_url
from recgrpc.db.migrate import upgrade

__all__ = ["Database", "normalise_url", "upgrade"]
