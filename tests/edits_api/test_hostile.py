"""Hostile request bodies, sent as raw bytes to the live gateway: each gets a 4xx in the OpenAI
envelope, quickly, and nothing reaches the provider; hostile file names never leave the gateway."""

from __future__ import annotations

import struct
import tempfile
import time
import uuid
import zlib
from pathlib import Path

import pytest
import requests

from tests.gateway import Gateway
from tests.standin import image_bytes, mask_bytes

BOUNDARY = "hostile-7f3a"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
PNG = image_bytes("png", (64, 64))


def part(
    name: str | None,
    value: bytes | str,
    *,
    filename: bytes | str | None = None,
    content_type: str | None = None,
) -> bytes:
    """One multipart part, written by hand so that anything may go into its headers."""
    disposition = b"Content-Disposition: form-data"
    if name is not None:
        disposition += b'; name="' + name.encode() + b'"'
    if filename is not None:
        disposition += b'; filename="' + (filename.encode() if isinstance(filename, str) else filename) + b'"'
    headers = disposition + (f"\r\nContent-Type: {content_type}".encode() if content_type else b"")
    body = value.encode() if isinstance(value, str) else value
    return b"--" + BOUNDARY.encode() + b"\r\n" + headers + b"\r\n\r\n" + body + b"\r\n"


def image_part(data: bytes = PNG, filename: bytes | str = "photo.png", name: str = "image") -> bytes:
    return part(name, data, filename=filename, content_type="image/png")


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY.encode() + b"--\r\n"


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header declares width x height RGBA pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )


def post(gateway: Gateway, body: bytes, content_type: str = MULTIPART) -> requests.Response:
    return requests.post(
        gateway.url + "/v1/images/edits", data=body, headers={"Content-Type": content_type}, timeout=30
    )


PROMPT = part("prompt", "add a hat")
MANY_FIELDS = b"".join(part(f"f{index}", "x") for index in range(10_000))
MANY_FILES = b"".join(image_part(b"x", f"{index}.png") for index in range(10_000))

# (body, content type, status, code or None when several are right, param or None)
HOSTILE = [
    pytest.param(form(PROMPT, image_part()), "multipart/form-data", 400, "invalid_request_body", None,
                 id="no-boundary-parameter"),
    pytest.param(form(PROMPT, image_part()), "multipart/form-data; boundary=", 400, "invalid_request_body", None,
                 id="empty-boundary"),
    pytest.param(PROMPT + image_part(), MULTIPART, 400, None, None, id="boundary-never-closes"),
    pytest.param(PROMPT + image_part()[:-40], MULTIPART, 400, None, None, id="body-cut-mid-part"),
    pytest.param(b"no multipart here at all", MULTIPART, 400, "missing_required_parameter", None, id="only-garbage"),
    pytest.param(b"", MULTIPART, 400, "missing_required_parameter", None, id="empty-body"),
    pytest.param(form(PROMPT, image_part()), "multipart/form-data; boundary=caf\u00e9", 400, "invalid_request_body",
                 None, id="non-ascii-boundary"),
    pytest.param(form(PROMPT, part(None, PNG, filename="a.png", content_type="image/png")), MULTIPART,
                 400, "missing_required_parameter", "image", id="file-part-without-name"),
    pytest.param(form(part(None, "add a hat"), image_part()), MULTIPART, 400, "missing_required_parameter",
                 "prompt", id="field-part-without-name"),
    pytest.param(MANY_FIELDS, MULTIPART, 400, "invalid_request_body", None, id="10000-fields"),
    pytest.param(MANY_FILES, MULTIPART, 400, "invalid_request_body", None, id="10000-files"),
    pytest.param(form(PROMPT, image_part(png_declaring(100_000, 100_000), "bomb.png")), MULTIPART,
                 400, "invalid_image", "image", id="png-bomb-100000x100000"),
    pytest.param(form(PROMPT, image_part(png_declaring(9_000, 9_000), "big.png")), MULTIPART,
                 400, "invalid_image", "image", id="png-declaring-81-megapixels"),
    pytest.param(form(PROMPT, image_part(), part("n", "abc")), MULTIPART, 400, "invalid_value", "n", id="n-abc"),
    pytest.param(form(PROMPT, image_part(), part("n", "1.5")), MULTIPART, 400, "invalid_value", "n", id="n-1.5"),
    pytest.param(form(PROMPT, image_part(), part("n", "-1")), MULTIPART, 400, "invalid_value", "n", id="n-minus-1"),
    pytest.param(form(PROMPT, image_part(), part("output_format", "jpeg"), part("output_compression", "x")),
                 MULTIPART, 400, "invalid_value", "output_compression", id="output-compression-x"),
    pytest.param(form(part("prompt", "add a hat", filename="prompt.txt", content_type="text/plain"), image_part()),
                 MULTIPART, 400, None, "prompt", id="prompt-as-a-file"),
    pytest.param(form(PROMPT, part("image", "not a file")), MULTIPART, 400, "invalid_type", "image",
                 id="image-as-text"),
    pytest.param(form(PROMPT, image_part(), part("mask", "not a file")), MULTIPART, 400, "invalid_type", "mask",
                 id="mask-as-text"),
    pytest.param(form(PROMPT, image_part(), part("stream", "maybe")), MULTIPART, 400, "invalid_value", "stream",
                 id="stream-maybe"),
    pytest.param(form(PROMPT, part("prompt", "a cat"), image_part()), MULTIPART, 400, "invalid_value", "prompt",
                 id="prompt-twice"),
    pytest.param(form(PROMPT, image_part(b"")), MULTIPART, 400, "invalid_image", "image", id="empty-file-part"),
    pytest.param(form(PROMPT, image_part(filename="")), MULTIPART, 400, None, "image",
                 id="file-part-with-empty-filename"),  # the parser takes it for a text field
    pytest.param(form(PROMPT, image_part(), image_part(mask_bytes((64, 64)), "m.png", "mask"),
                      image_part(mask_bytes((64, 64)), "m2.png", "mask")),
                 MULTIPART, 400, "invalid_value", "mask", id="mask-twice"),
    pytest.param(form(part("prompt", "x" * 5_000_000), image_part()), MULTIPART, 413, "invalid_request_body", None,
                 id="5-MB-prompt"),
    pytest.param(form(part("prompt", b"add a \xff\xfe hat"), image_part()), MULTIPART, 400, "invalid_value",
                 "prompt", id="prompt-not-utf-8"),
    pytest.param(form(PROMPT, image_part(), part("model", b"gpt-image-1\xc3")), MULTIPART, 400, "invalid_value",
                 "model", id="model-not-utf-8"),
    pytest.param(form(PROMPT, image_part(), part("model", "gpt-image-1\x00")), MULTIPART, 400, "invalid_value",
                 "model", id="model-with-a-nul-byte"),
    pytest.param(form(PROMPT, image_part(), part("us\xffer", "x")), MULTIPART, 400, None, None,
                 id="field-name-not-utf-8"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "content_type", "status", "code", "param"), HOSTILE)
def test_hostile_body_gets_a_quick_4xx_in_the_openai_shape_and_no_provider_call(
    gateway: Gateway, body: bytes, content_type: str, status: int, code: str | None, param: str | None
) -> None:
    started = time.monotonic()
    response = post(gateway, body, content_type)
    elapsed = time.monotonic() - started

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    assert elapsed < 3, f"took {elapsed:.1f} s"
    assert gateway.standin.received == []


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"--" + BOUNDARY.encode() + b"\r\n\x00\xffgarbage without headers\r\n\r\n", id="no-headers"),
        pytest.param(b"--" + BOUNDARY.encode() + b"\r\ngarbage and no blank line\r\n", id="no-blank-line"),
        pytest.param(
            b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition form-data name=x\r\n\r\ngarbage\r\n",
            id="broken-disposition",
        ),
    ],
)
def test_garbage_parts_between_parts_are_refused_and_never_forwarded(gateway: Gateway, garbage: bytes) -> None:
    # A part whose headers are not headers makes the body malformed: refused whole with a 400 that
    # says so (Django's parser used to skip such parts and go on), and nothing reaches the provider.
    response = post(gateway, form(PROMPT, garbage, image_part()))

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request_body"
    assert error["message"].startswith("The multipart body is malformed: ")
    assert "garbage" not in error["message"]
    assert gateway.standin.received == []


def test_media_type_is_case_insensitive(gateway: Gateway) -> None:
    response = post(gateway, form(PROMPT, image_part()), f"Multipart/Form-Data; boundary={BOUNDARY}")

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "filename",
    [
        b"a.png\r\nX-Injected: 1",  # raw CRLF: the rest becomes a header line of the part
        b"a.png\r\nX-Injected: 1\r\n\r\nsmuggled",
        b"a.png\nX-Injected: 1",
    ],
)
def test_crlf_in_a_filename_injects_no_header_anywhere(gateway: Gateway, filename: bytes) -> None:
    response = post(gateway, form(PROMPT, image_part(filename=filename)))

    assert "x-injected" not in {name.lower() for name in response.headers}
    if response.status_code == 200:
        (sent,) = gateway.standin.last.files
        assert sent.filename is not None
        assert "\r" not in sent.filename and "\n" not in sent.filename and ":" not in sent.filename
        assert "x-injected" not in {name.lower() for name in gateway.standin.last.headers}
    else:
        assert 400 <= response.status_code < 500
        assert response.json()["error"]["message"]
        assert gateway.standin.received == []


def test_encoded_crlf_in_a_filename_is_sanitized_before_forwarding(gateway: Gateway) -> None:
    # RFC 2231 form: the parser decodes %0D%0A into a real CR LF inside the file name.
    disposition = b"Content-Disposition: form-data; name=\"image\"; filename*=UTF-8''a%0D%0AX-Injected%3A%201.png"
    body = form(
        PROMPT,
        b"--" + BOUNDARY.encode() + b"\r\n" + disposition + b"\r\nContent-Type: image/png\r\n\r\n" + PNG + b"\r\n",
    )

    response = post(gateway, body)

    assert response.status_code == 200, response.text
    assert "x-injected" not in {name.lower() for name in response.headers}
    (sent,) = gateway.standin.last.files
    assert sent.filename is not None and sent.filename.endswith(".png")
    assert not set(sent.filename) & set("\r\n: /\\"), sent.filename


@pytest.mark.parametrize("prefix", ["../../", "..\\..\\", "/", "....//....//"])
def test_path_traversal_filename_is_forwarded_without_a_path_and_writes_nothing_outside(
    gateway: Gateway, prefix: str
) -> None:
    stem = f"gateway-traversal-{uuid.uuid4().hex}"
    # Past FILE_UPLOAD_MAX_MEMORY_SIZE, so the upload is spooled to a temporary file on disk.
    big = PNG + b"\0" * 400_000
    places = [Path(tempfile.gettempdir()), Path.cwd()]
    places += [parent for place in list(places) for parent in place.parents]

    response = post(gateway, form(PROMPT, image_part(big, f"{prefix}{stem}.png")))

    assert response.status_code == 200, response.text
    (sent,) = gateway.standin.last.files
    assert sent.filename == f"{stem}.png"
    assert [place for place in places if any(place.glob(f"{stem}*"))] == []


def test_etc_passwd_filename_is_forwarded_as_a_bare_name(gateway: Gateway) -> None:
    existed = Path("/etc/passwd.png").exists()

    response = post(gateway, form(PROMPT, image_part(filename="../../etc/passwd.png")))

    assert response.status_code == 200, response.text
    assert gateway.standin.last.files[0].filename == "passwd.png"
    assert Path("/etc/passwd.png").exists() == existed
