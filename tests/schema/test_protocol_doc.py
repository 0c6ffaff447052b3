"""Protocol reference tests: docs/protocol.md matches the .proto comments, which are complete.

Role: render the reference with tools.protodoc and compare it with the committed file; check
that every message, field, enum, enum value, service and rpc of the client and cluster planes
is commented. No sockets.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf import descriptor_pb2 as d

from tools import protodoc as p

PLANES = ("schema/client.proto", "schema/cluster.proto")


def elements(f: d.FileDescriptorProto) -> Iterator[tuple[tuple[int, ...], str]]:
    """(source path, name) of every documentable element of one file."""
    for i, msg in enumerate(f.message_type):
        yield (p.MESSAGE, i), msg.name
        for j, field in enumerate(msg.field):
            yield (p.MESSAGE, i, p.FIELD, j), f"{msg.name}.{field.name}"
    for i, en in enumerate(f.enum_type):
        yield (p.ENUM, i), en.name
        for j, value in enumerate(en.value):
            yield (p.ENUM, i, p.VALUE, j), f"{en.name}.{value.name}"
    for i, svc in enumerate(f.service):
        yield (p.SERVICE, i), svc.name
        for j, method in enumerate(svc.method):
            yield (p.SERVICE, i, p.METHOD, j), f"{svc.name}.{method.name}"


def test_protocol_doc_is_current() -> None:
    assert p.DOC.read_text(encoding="utf-8") == p.render(), (
        "docs/protocol.md is stale; run .venv/bin/python -m tools.protodoc"
    )


def test_every_element_is_commented() -> None:
    missing = []
    for f in p.load():
        if f.name in PLANES:
            comments = {tuple(loc.path): loc for loc in f.source_code_info.location}
            missing += [
                f"{f.name}: {name}" for path, name in elements(f) if not p.describe(comments, path)
            ]
    assert not missing, "uncommented: " + ", ".join(missing)
