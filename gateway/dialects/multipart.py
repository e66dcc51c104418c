"""A multipart/form-data upload's head (OpenAI's image edits and variations, transcriptions and translations): the
form fields read up to the first file part once `model` is known, so the request can be routed while the file
itself streams on untouched. Pure: fed bytes, it answers the fields and what to send in place of the head.

The head is scanned by hand, for its byte offsets: the provider must receive the client's bytes, with only the
`model` part's value rewritten (and the `provider` part taken out), which a reader that decodes parts and frames
them anew cannot give. Part headers are read with aiohttp's own Content-Disposition parser.
"""

from __future__ import annotations

from typing import NamedTuple

from aiohttp.multipart import parse_content_disposition

from gateway.errors import InvalidRequest

# A part's headers beyond this are not a form field's: refused rather than held.
MAX_PART_HEAD = 16 * 1024
# RFC 2046: a boundary is 1 to 70 characters.
_MAX_BOUNDARY = 70


class Field(NamedTuple):
    """One form field of the head: where its part starts and ends in the head's bytes (its delimiter line up to
    the CRLF before the next), and its value's span."""

    name: str
    filename: str | None
    start: int
    end: int
    value_start: int
    value_end: int


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type; 400 for any other body."""
    kind, _, params = (content_type or "").partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise InvalidRequest("this endpoint takes a multipart/form-data upload", code="invalid_content_type")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if 0 < len(value) <= _MAX_BOUNDARY and value.isascii():
                return value.encode("ascii")
    raise InvalidRequest("the multipart Content-Type has no valid boundary", code="invalid_content_type")


class FormHead:
    """Fed the upload's first bytes until `done`: the fields before the first file part that follows `model` (or
    every part, when the form ends first). A form that names its model only after a file holds that file too, so
    clients should send `model` first (the OpenAI SDKs do)."""

    __slots__ = ("_delimiter", "_next", "_searched", "data", "done", "end", "fields")

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"--" + boundary
        # Grown in place: a head that holds a file (model after it) is not copied once per chunk.
        self.data = bytearray()
        self._searched = 0  # how far a part's value has been searched for its end, so no byte is searched twice
        self.fields: list[Field] = []
        self.done = False
        self.end = 0  # where the head ends in `data`: everything from there on is relayed as it came
        self._next = -1  # where the next part's delimiter starts, once found

    def feed(self, chunk: bytes) -> None:
        self.data += chunk
        self._scan()

    def finish(self) -> None:
        """The body ended: a form that never closed, or never began, is refused."""
        if not self.done:
            raise InvalidRequest("the multipart body ends before its closing boundary", code="invalid_multipart")

    def value(self, name: str) -> str | None:
        """The first field of that name, as text."""
        for field in self.fields:
            if field.name == name and field.filename is None:
                return self.data[field.value_start : field.value_end].decode("utf-8", "replace")
        return None

    def rewritten(self, changes: dict[str, bytes | None]) -> bytes:
        """The head with each named field's value replaced (None: the whole part left out); the rest unchanged."""
        data = self.data
        out: list[bytes | bytearray] = []
        pos = 0
        for field in self.fields:
            if field.name not in changes:
                continue
            new = changes[field.name]
            if new is None:
                out.append(data[pos : field.start])
                pos = field.end
            else:
                out.append(data[pos : field.value_start])
                out.append(new)
                pos = field.value_end
        out.append(data[pos : self.end])
        return b"".join(out)

    @property
    def rest(self) -> bytes:
        """What was read past the head: the start of the part that streams through."""
        return bytes(self.data[self.end :])

    def _scan(self) -> None:
        data, delimiter = self.data, self._delimiter
        if self._next < 0:
            found = data.find(delimiter)
            if found < 0:
                if len(data) > MAX_PART_HEAD:
                    raise InvalidRequest("no multipart boundary where the form should begin", code="invalid_multipart")
                return
            self._next = found
        while not self.done:
            start = self._next
            after = start + len(delimiter)
            if len(data) < after + 2:
                return
            if data[after : after + 2] == b"--":  # the closing delimiter: the form is whole
                self.done, self.end = True, start
                return
            line_end = data.find(b"\r\n", after)
            if line_end < 0:
                if len(data) - after > MAX_PART_HEAD:
                    raise InvalidRequest("a multipart delimiter line is too long", code="invalid_multipart")
                return
            if data[after:line_end].strip(b" \t"):
                raise InvalidRequest("a multipart delimiter is followed by other bytes", code="invalid_multipart")
            heads = line_end + 2
            if data.startswith(b"\r\n", heads):
                head_end, value_start = heads, heads + 2
            else:
                head_end = data.find(b"\r\n\r\n", heads)
                if head_end < 0:
                    if len(data) - heads > MAX_PART_HEAD:
                        raise InvalidRequest("a multipart part's headers are too long", code="invalid_multipart")
                    return
                value_start = head_end + 4
            name, filename = _disposition(data[heads:head_end])
            if filename is not None and any(f.name == "model" for f in self.fields):
                # The first file after the model: from here on the body streams through as it came.
                self.done, self.end = True, start
                return
            ending = b"\r\n" + delimiter
            close = data.find(ending, max(value_start, self._searched - len(ending)))
            if close < 0:
                self._searched = len(data)
                return
            self.fields.append(Field(name, filename, start, close + 2, value_start, close))
            self._next = close + 2


def _disposition(block: bytes | bytearray) -> tuple[str, str | None]:
    """A part's field name and file name, from its Content-Disposition."""
    for line in block.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-disposition":
            kind, params = parse_content_disposition(value.decode("utf-8", "replace").strip())
            name = params.get("name")
            if kind != "form-data" or not name:
                break
            return name, params.get("filename")
    raise InvalidRequest("a multipart part without a form-data name", code="invalid_multipart")


class FormTail:
    """Watches the bytes after the head as they stream through: a later part named like a field the request was
    routed by (`model`, `provider`) is refused, since the provider might read that one instead. Only the few bytes
    that may hold a delimiter split over two chunks are kept."""

    __slots__ = ("_carry", "_ending", "_names")

    def __init__(self, boundary: bytes, names: frozenset[str]) -> None:
        self._ending = b"\r\n--" + boundary
        self._names = names
        self._carry = b""

    def feed(self, chunk: bytes) -> None:
        data = self._carry + chunk if self._carry else chunk
        ending = self._ending
        pos = 0
        while (found := data.find(ending, pos)) >= 0:
            heads = found + len(ending)
            if len(data) < heads + 2:
                self._carry = data[found:]
                return
            if data[heads : heads + 2] == b"--":  # the closing delimiter
                pos = heads + 2
                continue
            end = data.find(b"\r\n\r\n", heads)
            if end < 0:
                if len(data) - heads > MAX_PART_HEAD:
                    raise InvalidRequest("a multipart part's headers are too long", code="invalid_multipart")
                self._carry = data[found:]
                return
            name, _ = _disposition(data[heads:end].partition(b"\r\n")[2])
            if name in self._names:
                raise InvalidRequest(
                    f"the form names {name!r} after a file; send it once, before the files", code="duplicate_key"
                )
            pos = end + 4
        keep = len(ending) - 1
        self._carry = data[-keep:] if len(data) > keep else data
