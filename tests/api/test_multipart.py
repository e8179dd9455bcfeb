"""The streaming multipart reader: the same parts whatever way the body is cut into chunks."""

from __future__ import annotations

import httpx
import pytest

from api.multipart import MultipartError, MultipartReader, Part, boundary_of

BOUNDARY = b"xYz123"
# Written by hand (RFC 7578): a preamble, two parts (one of them empty, one holding
# "\r\n--xYz12" which is almost a delimiter), then an epilogue.
BODY = (
    b"preamble to ignore\r\n"
    b"--xYz123\r\n"
    b'Content-Disposition: form-data; name="train.jsonl"; filename="t.jsonl"\r\n'
    b"Content-Type: application/octet-stream\r\n"
    b"\r\n"
    b'{"text": "a"}\r\n--xYz12 not the end\r\n'
    b"\r\n--xYz123\r\n"
    b'Content-Disposition: form-data; name="meta.json"\r\n'
    b"\r\n"
    b"\r\n--xYz123--\r\n"
    b"epilogue to ignore"
)
EXPECTED = [(Part("train.jsonl", "t.jsonl"), b'{"text": "a"}\r\n--xYz12 not the end\r\n'), (Part("meta.json", ""), b"")]


def _parse(chunks: list[bytes]) -> list[tuple[Part, bytes]]:
    reader = MultipartReader(BOUNDARY)
    parts: list[tuple[Part, bytes]] = []
    data = b""
    for chunk in chunks:
        for kind, value in reader.feed(chunk):
            if kind == "begin":
                current, data = value, b""
            elif kind == "data":
                data += value  # type: ignore[operator]
            else:
                parts.append((current, data))  # type: ignore[arg-type]
    reader.close()
    return parts


def test_every_split_into_two_chunks_gives_the_same_parts() -> None:
    for cut in range(len(BODY) + 1):
        assert _parse([BODY[:cut], BODY[cut:]]) == EXPECTED, cut


def test_one_byte_at_a_time() -> None:
    assert _parse([BODY[i:i + 1] for i in range(len(BODY))]) == EXPECTED


def test_what_httpx_sends_is_read_back() -> None:
    request = httpx.Request("POST", "http://x/", files={"dev.jsonl": ("dev.jsonl", b"\x00\xff" * 5000)})
    boundary = boundary_of(request.headers["content-type"])
    assert boundary is not None
    reader = MultipartReader(boundary)
    body = request.read()
    events = [e for i in range(0, len(body), 1000) for e in reader.feed(body[i:i + 1000])]
    reader.close()
    assert events[0] == ("begin", Part("dev.jsonl", "dev.jsonl"))
    assert b"".join(v for k, v in events if k == "data") == b"\x00\xff" * 5000  # type: ignore[misc]


@pytest.mark.parametrize("body", [BODY[:-40], b"--xYz123\r\nno colon here\r\n\r\ndata", b"--xYz123junk\r\n"])
def test_truncated_or_malformed_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(MultipartError):
        _parse([body])


def test_boundary_of_accepts_only_form_data() -> None:
    assert boundary_of('multipart/form-data; boundary="ab c"') == b"ab c"
    assert boundary_of("application/json") is None
    assert boundary_of("multipart/form-data") is None
    assert boundary_of("multipart/form-data; boundary=" + "x" * 71) is None
