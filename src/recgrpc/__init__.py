"""recgrpc: a recommendation service over gRPC.

The client lives in :mod:`recgrpc.client` and needs only grpcio and protobuf; the server
(:mod:`recgrpc.server`, :mod:`recgrpc.model`, :mod:`recgrpc.db`) comes with the ``server`` extra.
"""

__version__ = "0.1.0"
