"""The range of an id: every uint64 of a request must fit the signed 64-bit columns it meets.

Role: one check, run by `RpcServer` on every parsed request of every node (the gateway's client
plane and each node's cluster plane), that refuses a request whose uint64 fields (user, group,
conversation and message ids, seqs, cursors — at any depth, repeated ones included) hold a
value above ID_MAX with INVALID_ARGUMENT, before any handler or SQL runs. protobuf's uint64
reaches 2**64-1, but ids, seqs and cursors are stored as signed BIGINT (MariaDB) and INTEGER
(SQLite), which end at 2**63-1: such a value would otherwise fail in the database driver and
answer INTERNAL. Only set fields are visited (`ListFields`), so a sparse message costs little.
No sockets, no I/O.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from fabric.methods import RpcError
from schema import common_pb2 as pb

ID_MAX = 2**63 - 1
"""The largest id, seq or cursor a request may carry: the top of a signed 64-bit column."""

_WIDE = (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_has_wide: dict[Descriptor, bool] = {}


def check(msg: Message) -> None:
    """Raise RpcError(INVALID_ARGUMENT) naming the first uint64 field of `msg` above ID_MAX."""
    where = out_of_range(msg)
    if where is not None:
        raise RpcError(pb.INVALID_ARGUMENT, f"{where}: at most {ID_MAX} (2**63-1)")


def out_of_range(msg: Message) -> str | None:
    """The dotted name of the first uint64 field above ID_MAX in `msg`, or None."""
    if not _wide(msg.DESCRIPTOR):
        return None
    for field, value in msg.ListFields():
        if field.type in _WIDE:
            if field.is_repeated:
                if value and max(value) > ID_MAX:
                    return field.name
            elif value > ID_MAX:
                return field.name
        elif field.type == _MESSAGE:
            if field.message_type.GetOptions().map_entry:
                where = _map_out_of_range(field, value)
                if where is not None:
                    return where
                continue
            items = value if field.is_repeated else (value,)
            for item in items:
                inner = out_of_range(item)
                if inner is not None:
                    return f"{field.name}.{inner}"
    return None


def _map_out_of_range(field: FieldDescriptor, value: Any) -> str | None:
    """The first key or value of a map field above ID_MAX (or inside a message value)."""
    key_field, value_field = field.message_type.fields_by_name["key"], \
        field.message_type.fields_by_name["value"]
    for key, item in value.items():
        if key_field.type in _WIDE and key > ID_MAX:
            return f"{field.name}[key]"
        if value_field.type in _WIDE and item > ID_MAX:
            return f"{field.name}[{key}]"
        if value_field.type == _MESSAGE:
            inner = out_of_range(item)
            if inner is not None:
                return f"{field.name}[{key}].{inner}"
    return None


def _wide(desc: Descriptor, seen: frozenset[Descriptor] = frozenset()) -> bool:
    """Whether `desc` holds a uint64 field at any depth (cached per message type)."""
    known = _has_wide.get(desc)
    if known is not None:
        return known
    found = any(field.type in _WIDE or (
        field.type == _MESSAGE and field.message_type not in seen
        and _wide(field.message_type, seen | {desc})) for field in desc.fields)
    if not seen:  # a result inside a recursive type's own walk may be partial
        _has_wide[desc] = found
    return found
