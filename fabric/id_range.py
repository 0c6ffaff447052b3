"""The range of an id: every uint64 of a request must fit the signed 64-bit columns it meets.

Role: one check, run by `RpcServer` on every parsed request of the gateway's client plane and
of the cluster plane of every node whose ids reach a database (all but routers, whose presence
is in memory: `Node.stores_ids`), that refuses a request whose uint64 fields (user, group,
conversation and message ids, seqs, cursors — at any depth, repeated ones included) hold a
value above ID_MAX with INVALID_ARGUMENT, before any handler or SQL runs. protobuf's uint64
reaches 2**64-1, but ids, seqs and cursors are stored as signed BIGINT (MariaDB) and INTEGER
(SQLite), which end at 2**63-1: such a value would otherwise fail in the database driver and
answer INTERNAL. Only the fields that can hold a uint64 are read (planned once per message
type): a router's DeliverBatch of ten deliveries costs ~4 µs instead of ~32 µs with a walk over
`ListFields`. No sockets, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from fabric.methods import RpcError
from schema import common_pb2 as pb

if TYPE_CHECKING:  # the C (upb) descriptors that messages carry at run time
    from google._upb._message import Descriptor as UpbDescriptor
    from google._upb._message import FieldDescriptor as UpbFieldDescriptor

MessageType: TypeAlias = "Descriptor | UpbDescriptor"
"""A message type's descriptor: the pure-Python class or the upb one (`Message.DESCRIPTOR`)."""
Field: TypeAlias = "FieldDescriptor | UpbFieldDescriptor"
"""A field's descriptor, either kind."""

ID_MAX = 2**63 - 1
"""The largest id, seq or cursor a request may carry: the top of a signed 64-bit column."""

_WIDE = (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64)
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_has_wide: dict[MessageType, bool] = {}


def check(msg: Message) -> None:
    """Raise RpcError(INVALID_ARGUMENT) naming the first uint64 field of `msg` above ID_MAX."""
    where = out_of_range(msg)
    if where is not None:
        raise RpcError(pb.INVALID_ARGUMENT, f"{where}: at most {ID_MAX} (2**63-1)")


def may_hold_ids(msg_type: type[Message]) -> bool:
    """Whether a message of `msg_type` can hold a uint64 at any depth: a server checks only the
    requests of the methods whose type can (`check` of any other finds nothing)."""
    return _wide(msg_type.DESCRIPTOR)


@dataclass(frozen=True)
class _Plan:
    """Where a message type can hold a uint64: the fields to look at, by kind."""

    scalars: tuple[str, ...]
    repeated: tuple[str, ...]
    messages: tuple[str, ...]
    repeated_messages: tuple[str, ...]
    maps: tuple[Field, ...]


_plans: dict[MessageType, _Plan | None] = {}


def out_of_range(msg: Message) -> str | None:
    """The dotted name of the first uint64 field above ID_MAX in `msg`, or None.

    Each message type is planned once (which of its fields can hold a uint64 at any depth);
    a request then costs an attribute read per such field, not a walk over every field."""
    plan = _plans.get(msg.DESCRIPTOR, _UNPLANNED)
    if plan is _UNPLANNED:
        plan = _plans[msg.DESCRIPTOR] = _plan(msg.DESCRIPTOR)
    if plan is None:
        return None
    for name in plan.scalars:
        if getattr(msg, name) > ID_MAX:
            return name
    for name in plan.repeated:
        values = getattr(msg, name)
        if values and max(values) > ID_MAX:
            return name
    for name in plan.messages:
        if msg.HasField(name):
            inner = out_of_range(getattr(msg, name))
            if inner is not None:
                return f"{name}.{inner}"
    for name in plan.repeated_messages:
        for item in getattr(msg, name):
            inner = out_of_range(item)
            if inner is not None:
                return f"{name}.{inner}"
    for field in plan.maps:
        where = _map_out_of_range(field, getattr(msg, field.name))
        if where is not None:
            return where
    return None


_UNPLANNED = _Plan((), (), (), (), ())
"""A sentinel: `_plans` has no entry for the type yet."""


def _plan(desc: MessageType) -> _Plan | None:
    """Which fields of `desc` can hold a uint64; None when none can."""
    if not _wide(desc):
        return None
    scalars: list[str] = []
    repeated: list[str] = []
    messages: list[str] = []
    repeated_messages: list[str] = []
    maps: list[Field] = []
    for field in desc.fields:
        if field.type in _WIDE:
            (repeated if field.is_repeated else scalars).append(field.name)
        elif field.type == _MESSAGE and _wide(_message_type(field)):
            if _message_type(field).GetOptions().map_entry:
                maps.append(field)
            else:
                (repeated_messages if field.is_repeated else messages).append(field.name)
    return _Plan(
        tuple(scalars), tuple(repeated), tuple(messages), tuple(repeated_messages), tuple(maps)
    )


def _map_out_of_range(field: Field, value: Any) -> str | None:
    """The first key or value of a map field above ID_MAX (or inside a message value)."""
    entry = _message_type(field)
    key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
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


def _message_type(field: Field) -> MessageType:
    """The message type of a message (or map) field, which always has one."""
    if field.message_type is None:
        raise TypeError(f"{field.full_name} is not a message field")
    return field.message_type


def _wide(desc: MessageType, seen: frozenset[MessageType] = frozenset()) -> bool:
    """Whether `desc` holds a uint64 field at any depth (cached per message type)."""
    known = _has_wide.get(desc)
    if known is not None:
        return known
    found = any(
        field.type in _WIDE
        or (
            field.type == _MESSAGE
            and field.message_type not in seen
            and _wide(_message_type(field), seen | {desc})
        )
        for field in desc.fields
    )
    if not seen:  # a result inside a recursive type's own walk may be partial
        _has_wide[desc] = found
    return found
