"""The gRPC server: thin servicers over one handler layer, interceptors, factory, lifecycle."""

from recgrpc.server.app import RunningServer, create_server
from recgrpc.server.lifecycle import serve

__all__ = ["RunningServer", "create_server", "serve"]
