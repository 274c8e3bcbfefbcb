"""Registers servicers from their service descriptors, with one error mapping for every RPC.

Requests arrive as raw bytes and are parsed here, so bytes that are not a valid message are
refused with INVALID_ARGUMENT (the caller's fault) rather than the framework's INTERNAL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message as pb_message
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from recgrpc.errors import InvalidArgument
from recgrpc.server.errors import status_for

Behaviour = Callable[[Any, grpc.ServicerContext], Any]


def _unary_handler(
    method: MethodDescriptor, behaviour: Behaviour
) -> grpc.RpcMethodHandler[Any, Any]:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    full_name = f"/{method.containing_service.full_name}/{method.name}"

    def handle(raw: bytes, context: grpc.ServicerContext) -> Any:
        try:
            try:
                request = request_class.FromString(raw)
            except pb_message.DecodeError:
                raise InvalidArgument.single(
                    "request", f"is not a valid {method.input_type.full_name} message"
                ) from None
            return behaviour(request, context)
        except Exception as exc:
            status = status_for(exc, full_name)
        context.abort_with_status(status)
        raise AssertionError("abort_with_status returned")  # pragma: no cover

    return grpc.unary_unary_rpc_method_handler(
        handle,
        request_deserializer=None,
        response_serializer=response_class.SerializeToString,
    )


def service_handler(
    service: ServiceDescriptor, servicer: object
) -> grpc.GenericRpcHandler[Any, Any]:
    """A generic handler serving every method of ``service`` from ``servicer``'s methods."""
    handlers = {
        method.name: _unary_handler(method, getattr(servicer, method.name))
        for method in service.methods
    }
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
