"""RPC method specs: the name, request and reply types, and whether a call may be retried.

Role: the shared catalogue both ends of an RPC agree on; this module holds the `Method` type and
the methods every node serves (fabric.Echo, fabric.Status, node.Drain). Role-specific
catalogues live beside each node. No sockets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from schema import cluster_pb2, fabric_pb2


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC: only `idempotent` methods are ever retried by the client."""

    name: str
    request: type[Message]
    reply: type[Message]
    idempotent: bool = False


def catalogue(service: ServiceDescriptor, idempotent: Iterable[str] = ()) -> dict[str, Method]:
    """The methods of a .proto `service` block, named "<service in lower case>.<rpc>".

    The .proto services are method tables only (no gRPC); `idempotent` names the rpcs a client
    may retry.
    """
    retry = set(idempotent)
    prefix = service.name.lower()
    return {
        m.name: Method(
            f"{prefix}.{m.name}",
            GetMessageClass(m.input_type),
            GetMessageClass(m.output_type),
            m.name in retry,
        )
        for m in service.methods
    }


ECHO = Method("fabric.Echo", fabric_pb2.EchoRequest, fabric_pb2.EchoReply, idempotent=True)
STATUS = Method("fabric.Status", fabric_pb2.StatusRequest, fabric_pb2.StatusReply, idempotent=True)
NODE = catalogue(cluster_pb2.DESCRIPTOR.services_by_name["Node"], idempotent=["Drain"])
"""Control calls every node serves: node.Drain."""


class RpcError(Exception):
    """An RPC ended with an ErrorCode (common.proto) other than OK; `detail` is safe to show."""

    def __init__(self, code: int, detail: str = "") -> None:
        from schema import common_pb2

        self.code = code
        self.detail = detail
        name = common_pb2.ErrorCode.Name(code) if code in common_pb2.ErrorCode.values() else code
        super().__init__(f"{name}: {detail}" if detail else str(name))
