"""envelope.decode_frame: every frame gets the reason of the first check it fails, in the
documented order (size, magic, header length, header, fields), whichever way its prefix is read
(the prebuilt prefixes of headers under 256 bytes by one lookup, any other by its bytes)."""

from __future__ import annotations

import pytest

from fabric import envelope
from fabric.envelope import MAGIC, DecodeError, EnvelopeError
from schema import common_pb2 as pb


def reason(data: bytes, max_bytes: int = 1 << 20) -> DecodeError:
    with pytest.raises(EnvelopeError) as err:
        envelope.decode_frame(data, max_bytes)
    return err.value.reason


def test_each_bad_prefix_gets_its_reason() -> None:
    assert reason(b"") == DecodeError.BAD_MAGIC
    assert reason(b"SOIM") == DecodeError.BAD_MAGIC
    assert reason(b"SOIM\x01\x00\x00") == DecodeError.BAD_MAGIC  # another layout version
    assert reason(b"XOIM\x02\x00\x00payload") == DecodeError.BAD_MAGIC
    assert reason(MAGIC) == DecodeError.BAD_HEADER  # no header length
    assert reason(MAGIC + b"\x00") == DecodeError.BAD_HEADER
    assert reason(MAGIC + b"\x00\x05abcd") == DecodeError.BAD_HEADER  # past the frame
    assert reason(MAGIC + b"\x01\x00" + b"\x00" * 200) == DecodeError.BAD_HEADER  # long, past
    assert reason(b"XOIM\x02\x00\x00" + b"x" * 64, max_bytes=32) == DecodeError.TOO_LARGE
    assert reason(MAGIC + b"\x00\x00") == DecodeError.BAD_KIND  # an empty header parses


def test_short_and_long_headers_decode_alike() -> None:
    for method in ("fabric.Echo", "m" * 300):  # a header under 256 bytes, and one over
        frame = envelope.request(method, 7, 2**40, b"payload")[0]
        header, payload = envelope.decode_frame(frame, 1 << 20)
        assert (header.kind, header.request_id, header.method) == (pb.REQUEST, 7, method)
        assert payload == b"payload"
        assert reason(frame[:-8]) == DecodeError.BAD_HEADER  # cut inside the header
