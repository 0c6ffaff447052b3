"""fabric.methods.catalogue: the idempotency of each rpc, read from its .proto file's serialized
descriptor, is the idempotency_level its options declare — for every service of every schema
module — and building the catalogues leaves google.protobuf.descriptor_pb2 unloaded (the reason
it does not ask `GetOptions()`: ~0.3 MB in every node)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import ServiceDescriptor

from fabric.methods import catalogue
from schema import client_pb2, cluster_pb2, common_pb2, fabric_pb2

ROOT = Path(__file__).resolve().parents[2]
SERVICES = [
    service
    for module in (client_pb2, cluster_pb2, common_pb2, fabric_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
]


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_idempotency_is_the_declared_level(service: ServiceDescriptor) -> None:
    methods = catalogue(service)
    assert set(methods) == set(service.methods_by_name)
    for m in service.methods:
        assert methods[m.name].idempotency == m.GetOptions().idempotency_level, m.full_name


def test_every_level_occurs() -> None:
    levels = {m.idempotency for service in SERVICES for m in catalogue(service).values()}
    assert levels == {0, 1, 2}  # IDEMPOTENCY_UNKNOWN, NO_SIDE_EFFECTS, IDEMPOTENT


def test_catalogues_leave_descriptor_pb2_unloaded() -> None:
    code = (
        "import sys\n"
        "import fabric.retry\n"
        "import schema.contracts.client, schema.contracts.directory\n"
        "import schema.contracts.router, schema.contracts.storage\n"
        "print('google.protobuf.descriptor_pb2' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
