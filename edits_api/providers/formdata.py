"""A multipart/form-data request body, written as openai-python (httpx) writes it, whose files are
not copied into it: a file on disk stays a range of that file, to be sent from the file itself
(providers/http.py sends it with sendfile where it can).

Byte for byte what httpx sends: a random 32-hex-digit boundary; each part
``--boundary\\r\\nContent-Disposition: form-data; name="..."`` (with ``; filename="..."`` and a
``Content-Type`` line for files), a blank line, the content and ``\\r\\n``; the fields first, then
the files; ``--boundary--\\r\\n`` at the end.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

# Quoted names and filenames escaped as httpx escapes them: '"' and the control characters but ESC
# percent-encoded, '\' doubled (browsers encode '"', CR and LF alike). A CR or LF could otherwise
# end the header and start another, a '"' end the quoted string.
_ESCAPES = {ord('"'): "%22", ord("\\"): "\\\\"} | {c: f"%{c:02X}" for c in range(0x20) if c != 0x1B}


class FilePart(NamedTuple):
    name: str  # the form field, e.g. "image" or "image[]"
    filename: str
    file: BinaryIO  # sent whole, from its start, as httpx sends it
    content_type: str


@dataclass(frozen=True)
class FileRange:
    """``count`` bytes of a file on disk from ``offset``: a part's content left in its file."""

    file: BinaryIO
    offset: int
    count: int


class FormData:
    """The body: bytes (everything between files, and in-memory files), and file ranges.

    ``len()`` is exact up front (file sizes from fstat, nothing read), so the request carries a
    Content-Length. Iterating gives the segments to send in order (providers/http.py sends them).
    A body whose files are all in memory (BytesIO, e.g. the uploads Django keeps in memory) is one
    bytes object.
    """

    def __init__(self, fields: Iterable[tuple[str, str]], files: Iterable[FilePart]) -> None:
        self.boundary = os.urandom(16).hex()
        delimiter = f"--{self.boundary}\r\n".encode()
        segments: list[bytes | FileRange] = []
        pending: list[bytes] = []  # bytes since the last file range, joined into one segment
        for name, value in fields:
            pending += [delimiter, b"Content-Disposition: form-data; name=", _quoted(name), b"\r\n\r\n"]
            pending += [value.encode(), b"\r\n"]
        for part in files:
            pending += [delimiter, b"Content-Disposition: form-data; name=", _quoted(part.name)]
            pending += [b"; filename=", _quoted(part.filename), b"\r\nContent-Type: ", part.content_type.encode()]
            pending.append(b"\r\n\r\n")
            content = _content(part.file)
            if isinstance(content, bytes):
                pending.append(content)
            else:
                segments += [b"".join(pending), content]
                pending = []
            pending.append(b"\r\n")
        pending.append(f"--{self.boundary}--\r\n".encode())
        segments.append(b"".join(pending))
        self._segments = segments
        self._length = sum(len(s) if isinstance(s, bytes) else s.count for s in segments)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes | FileRange]:
        return iter(self._segments)


def _quoted(value: str) -> bytes:
    return b'"' + value.translate(_ESCAPES).encode() + b'"'


def _content(file: BinaryIO) -> bytes | FileRange:
    """A file part's content: an in-memory file's own bytes, or the range of a file on disk."""
    if isinstance(file, io.BytesIO):
        return file.getvalue()  # for one made from bytes (ImageFile.open), those bytes: no copy
    try:
        size = os.fstat(file.fileno()).st_size
    except (AttributeError, OSError):  # no file descriptor: in memory (io.UnsupportedOperation is an OSError)
        file.seek(0)
        return file.read()
    return FileRange(file, 0, size)
