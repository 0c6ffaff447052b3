"""Build helper: render docs/protocol.md, the protocol reference, from the schema/*.proto comments.

Role: compile the .proto files with source info (grpc-tools protoc) into a descriptor set and
write every service, message, field and enum, in source order, as Markdown. `render()` is also
used by the test that fails when docs/protocol.md is stale. No sockets.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from google.protobuf import descriptor_pb2 as d

from tools.protogen import ROOT, SCHEMA

DOC = ROOT / "docs" / "protocol.md"

# Field numbers of FileDescriptorProto, DescriptorProto, EnumDescriptorProto and
# ServiceDescriptorProto, as they appear in SourceCodeInfo location paths.
SYNTAX, MESSAGE, ENUM, SERVICE = 12, 4, 5, 6
FIELD, ONEOF, VALUE, METHOD = 2, 8, 2, 2

LocPath = tuple[int, ...]
Comments = dict[LocPath, d.SourceCodeInfo.Location]

INTRO = """# so-im protocol reference

The wire messages of so-im, taken from the comments in `schema/*.proto`. Every frame on every
socket is an envelope: a magic frame, a `Header` (common.proto) and one payload message. The
client plane (`client.proto`) is spoken between the chat client and a gateway; the cluster plane
(`cluster.proto`, `fabric.proto`) between nodes. All messages are in protobuf package `soim`.
"""


def load() -> list[d.FileDescriptorProto]:
    """Compile schema/*.proto with comments kept; return the file descriptors, sorted by name."""
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(ROOT)) for p in SCHEMA.glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "schema.pb"
        args = [
            "protoc",
            f"-I{ROOT}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed: " + " ".join(args))
        files = d.FileDescriptorSet.FromString(out.read_bytes()).file
    return sorted(files, key=lambda f: f.name)


def text(raw: str) -> str:
    """One comment as a single Markdown-safe line."""
    return " ".join(raw.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def describe(comments: Comments, path: LocPath) -> str:
    """The leading and trailing comment of the element at `path`, joined."""
    loc = comments.get(path)
    if loc is None:
        return ""
    return " — ".join(t for t in (text(loc.leading_comments), text(loc.trailing_comments)) if t)


def detached(comments: Comments, path: LocPath) -> list[str]:
    """Comment blocks standing apart before an element: a dashed rule opens a section heading."""
    out: list[str] = []
    loc = comments.get(path)
    for block in loc.leading_detached_comments if loc else []:
        lines = [line.strip() for line in block.strip().splitlines()]
        if lines and set(lines[0]) == {"-"}:
            out.append(f"### {text(lines[1])}\n")
            lines = lines[2:]
        if lines:
            out.append(text(" ".join(lines)) + "\n")
    return out


def type_name(field: d.FieldDescriptorProto, msg: d.DescriptorProto) -> str:
    """A field's type as written in the .proto, linked when it is a message or enum."""
    if field.type_name:
        short = field.type_name.rsplit(".", 1)[-1]
        for nested in msg.nested_type:
            if nested.name == short and nested.options.map_entry:
                key, value = (type_name(f, nested).strip("`") for f in nested.field)
                return f"`map<{key}, {value}>`"
        name = f"[{short}](#{short.lower()})"
    else:
        name = "`" + d.FieldDescriptorProto.Type.Name(field.type)[5:].lower() + "`"
    repeated = field.label == d.FieldDescriptorProto.LABEL_REPEATED
    return "repeated " + name if repeated else name


def message(comments: Comments, msg: d.DescriptorProto, path: LocPath) -> list[str]:
    out = [f"#### {msg.name}\n"]
    if about := describe(comments, path):
        out.append(about + "\n")
    if not msg.field:
        out.append("*No fields.*\n")
        return out
    out += ["| field | type | # | description |", "|---|---|---|---|"]
    for i, field in enumerate(msg.field):
        about = describe(comments, (*path, FIELD, i))
        if field.HasField("oneof_index"):
            group = msg.oneof_decl[field.oneof_index].name
            note = describe(comments, (*path, ONEOF, field.oneof_index))
            about = f"one of `{group}`" + (f" ({note})" if note else "") + f": {about}"
        out.append(f"| `{field.name}` | {type_name(field, msg)} | {field.number} | {about} |")
    return [*out, ""]


def enum(comments: Comments, en: d.EnumDescriptorProto, path: LocPath) -> list[str]:
    out = [
        f"#### {en.name}\n",
        "*Enum.* " + describe(comments, path) + "\n",
        "| value | # | description |",
        "|---|---|---|",
    ]
    for i, value in enumerate(en.value):
        out.append(f"| `{value.name}` | {value.number} | {describe(comments, (*path, VALUE, i))} |")
    return [*out, ""]


IDEMPOTENCY = {
    d.MethodOptions.IDEMPOTENCY_UNKNOWN: "asked once",
    d.MethodOptions.NO_SIDE_EFFECTS: "no side effects",
    d.MethodOptions.IDEMPOTENT: "idempotent",
}
"""An rpc's `idempotency_level` as the reference shows it (fabric.retry retries the last two)."""


def service(comments: Comments, svc: d.ServiceDescriptorProto, path: LocPath) -> list[str]:
    out = [
        f"#### {svc.name} (service)\n",
        describe(comments, path) + "\n",
        "| method | request | reply | idempotency | description |",
        "|---|---|---|---|---|",
    ]
    for i, m in enumerate(svc.method):
        request, reply = (t.rsplit(".", 1)[-1] for t in (m.input_type, m.output_type))
        out.append(
            f"| `{svc.name.lower()}.{m.name}` | [{request}](#{request.lower()}) "
            f"| [{reply}](#{reply.lower()}) | {IDEMPOTENCY[m.options.idempotency_level]} "
            f"| {describe(comments, (*path, METHOD, i))} |"
        )
    return [*out, ""]


def render_file(f: d.FileDescriptorProto) -> list[str]:
    """One .proto file: its header comment, then its top-level elements in source order."""
    comments: Comments = {tuple(loc.path): loc for loc in f.source_code_info.location}
    syntax = comments.get((SYNTAX,))
    head = [
        *(syntax.leading_detached_comments if syntax else []),
        syntax.leading_comments if syntax else "",
    ]
    out = [f"## {Path(f.name).name}\n", text(" ".join(head)) + "\n"]
    elements: list[tuple[LocPath, Callable[[], list[str]]]] = []
    elements += [
        ((MESSAGE, i), partial(message, comments, m, (MESSAGE, i)))
        for i, m in enumerate(f.message_type)
    ]
    elements += [
        ((ENUM, i), partial(enum, comments, e, (ENUM, i))) for i, e in enumerate(f.enum_type)
    ]
    elements += [
        ((SERVICE, i), partial(service, comments, s, (SERVICE, i))) for i, s in enumerate(f.service)
    ]
    elements.sort(key=lambda e: comments[e[0]].span[0])
    for path, render_one in elements:
        out += detached(comments, path) + render_one()
    return out


def render() -> str:
    """The whole protocol reference as Markdown."""
    lines = [INTRO]
    for f in load():
        lines += render_file(f)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
