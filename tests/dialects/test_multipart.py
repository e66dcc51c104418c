"""The multipart head reader and tail watcher: fed in any split, they find the same fields and offsets."""

from __future__ import annotations

import pytest

from gateway.dialects.multipart import FormHead, FormTail, boundary_of
from gateway.errors import InvalidRequest
from tests.fakes.uploads import BOUNDARY, form

FILE = b"\r\n--not-the-boundary\r\n" + bytes(range(256)) * 8
BODY = form(("model", b"openai/whisper-1", None), ("stream", b"true", None), ("file", FILE, "a.wav"))


@pytest.mark.parametrize("size", [1, 7, 64, len(BODY)])
def test_the_head_is_read_in_any_split(size: int) -> None:
    head = FormHead(BOUNDARY.encode())
    for start in range(0, len(BODY), size):
        if head.done:
            break
        head.feed(BODY[start : start + size])
    assert head.done
    assert (head.value("model"), head.value("stream"), head.value("file")) == ("openai/whisper-1", "true", None)
    assert bytes(head.data[: head.end]) + head.rest == bytes(head.data)
    assert BODY.startswith(bytes(head.data))
    assert BODY[head.end :].startswith(b"--" + BOUNDARY.encode() + b'\r\nContent-Disposition: form-data; name="file"')
    rewritten = head.rewritten({"model": b"whisper-1", "stream": None})
    assert rewritten + BODY[head.end :] == form(("model", b"whisper-1", None), ("file", FILE, "a.wav"))


def test_a_form_of_fields_only_is_whole_at_its_closing_delimiter() -> None:
    body = form(("model", b"m", None), ("prompt", b"a\r\nb", None))
    head = FormHead(BOUNDARY.encode())
    head.feed(body)
    assert head.done and head.value("prompt") == "a\r\nb"
    assert head.rest == b"--" + BOUNDARY.encode() + b"--\r\n"


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('Multipart/Form-Data; charset=utf-8; boundary="a b:c"', b"a b:c"),
    ],
)
def test_boundaries(content_type: str, boundary: bytes) -> None:
    assert boundary_of(content_type) == boundary


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "multipart/form-data", "multipart/mixed; boundary=a"]
)
def test_not_a_form_upload(content_type: str | None) -> None:
    with pytest.raises(InvalidRequest):
        boundary_of(content_type)


@pytest.mark.parametrize("size", [1, 5, 33, 4096])
def test_the_tail_refuses_a_routed_field_after_the_file_in_any_split(size: int) -> None:
    late = form(("file", FILE, "a.wav"), ("language", b"en", None), ("model", b"other", None))
    tail = FormTail(BOUNDARY.encode(), frozenset({"model", "provider"}))
    with pytest.raises(InvalidRequest) as caught:
        for start in range(0, len(late), size):
            tail.feed(late[start : start + size])
    assert caught.value.code == "duplicate_key"


def test_the_tail_lets_other_fields_pass() -> None:
    tail = FormTail(BOUNDARY.encode(), frozenset({"model"}))
    body = form(("file", FILE, "a.wav"), ("language", b"en", None))
    for start in range(0, len(body), 3):
        tail.feed(body[start : start + 3])
