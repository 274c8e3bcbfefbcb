"""Small helpers for tests that talk to the server through the generated stubs."""

from __future__ import annotations

import socket
import subprocess
from datetime import datetime
from pathlib import Path

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from recgrpc.server import RunningServer
from recgrpc.v1 import catalog_pb2_grpc, recommendation_pb2_grpc


def target(server: RunningServer) -> str:
    """The server's loopback address, for a client to connect to."""
    return f"127.0.0.1:{server.port}"


REC_SERVICE = "recgrpc.v1.RecommendationService"
CATALOG_SERVICE = "recgrpc.v1.CatalogService"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for localhost and 127.0.0.1, made with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def stubs(
    channel: grpc.Channel,
) -> tuple[recommendation_pb2_grpc.RecommendationServiceStub, catalog_pb2_grpc.CatalogServiceStub]:
    return (
        recommendation_pb2_grpc.RecommendationServiceStub(channel),
        catalog_pb2_grpc.CatalogServiceStub(channel),
    )


def bad_fields(error: grpc.RpcError) -> list[str]:
    """Field names of the google.rpc.BadRequest violations carried by an INVALID_ARGUMENT."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return [v.field for v in bad.field_violations]
    raise AssertionError("INVALID_ARGUMENT without a google.rpc.BadRequest detail")


def ts(when: datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp for an aware datetime."""
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(when)
    return out
