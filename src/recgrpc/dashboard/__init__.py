"""The read-only analytics dashboard: an HTTP port of its own beside the gRPC server.

Pages: Overview, Models, the user and item inspectors. Jinja2 templates with server-rendered SVG
charts (no JavaScript, nothing fetched from elsewhere), behind the API's bearer tokens.
"""

from recgrpc.dashboard.server import DashboardServer
from recgrpc.dashboard.sources import Capabilities

__all__ = ["Capabilities", "DashboardServer"]
