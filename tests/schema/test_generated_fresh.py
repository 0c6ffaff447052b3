"""Schema tests: the committed generated code is current, and the protos keep their contracts.

Role: regenerate schema/*_pb2.py and *_pb2.pyi into a tmp dir and compare them with the
committed files; round-trip every client and cluster message; check the closed ErrorCode enum
and that every client request has a reply. No sockets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor
from google.protobuf.message_factory import GetMessageClass

from schema import client_pb2, cluster_pb2, common_pb2
from tools.protogen import SCHEMA, generate

PLANES = (client_pb2, cluster_pb2)
MESSAGES: list[Descriptor] = [
    desc for module in PLANES for desc in module.DESCRIPTOR.message_types_by_name.values()
]


def test_generated_files_are_fresh(tmp_path: Path) -> None:
    fresh = {p.name: p for p in generate(tmp_path)}
    committed = {p.name: p for p in SCHEMA.glob("*_pb2.py*")}
    assert sorted(committed) == sorted(fresh), "generated files differ in name; run make proto"
    for name, path in sorted(committed.items()):
        if path.read_bytes() != fresh[name].read_bytes():
            pytest.fail(f"schema/{name} is stale; run make proto")


@pytest.mark.parametrize("desc", MESSAGES, ids=lambda d: d.full_name)
def test_message_round_trips(desc: Descriptor) -> None:
    cls = GetMessageClass(desc)
    original = cls()
    parsed = cls.FromString(original.SerializeToString())
    assert parsed == original


def test_error_codes_are_unique() -> None:
    numbers = [v.number for v in common_pb2.ErrorCode.DESCRIPTOR.values]
    assert len(numbers) == len(set(numbers))
    assert common_pb2.ErrorCode.Name(0) == "OK"


def test_every_client_request_has_a_reply() -> None:
    service = client_pb2.DESCRIPTOR.services_by_name["Client"]
    messages = client_pb2.DESCRIPTOR.message_types_by_name
    requests = {name for name in messages if name.endswith("Request")}
    served = {m.input_type.name for m in service.methods}
    assert requests == served, f"requests without an rpc: {sorted(requests - served)}"
    for method in service.methods:
        assert method.output_type.file is client_pb2.DESCRIPTOR, method.name
        assert method.output_type.name in messages, method.name
