"""A full disk never loses what was paid for and never answers 500: images that cannot be stored come
inline, an upload that cannot be spooled is a 503 with nothing left behind.

The full disk is a tiny tmpfs filled up (as root, which CI is), else a folder without write permission.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.gateway import Gateway
from tests.standin import image_bytes

PNG = image_bytes("png", (64, 64))


def _files_in(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() and path.name != "filler"]


@pytest.fixture
def full_folder(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = os.geteuid() == 0 and (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=False).returncode == 0
    )
    try:
        (folder / "images").mkdir()
        if mounted:
            filler = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                while os.write(filler, b"\0" * 4096):
                    pass
            except OSError:  # full
                pass
            finally:
                os.close(filler)
        else:
            for path in (folder / "images", folder):
                path.chmod(0o500)
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)
        else:
            for path in (folder, folder / "images"):
                path.chmod(0o700)


def test_images_that_cannot_be_stored_are_answered_inline_and_replayed_without_a_second_call(
    gateway: Gateway, settings: Any, full_folder: Path
) -> None:
    settings.MEDIA_ROOT = full_folder
    headers = {"Idempotency-Key": "paid-once"}
    data = {"prompt": "hat", "response_format": "url", "n": "2"}

    first = gateway.edit(files=[("image", ("a.png", PNG, "image/png"))], data=data, headers=headers)
    again = gateway.edit(files=[("image", ("a.png", PNG, "image/png"))], data=data, headers=headers)

    assert first.status_code == 200, first.text
    assert [(item["url"], bool(item["b64_json"])) for item in first.json()["data"]] == [(None, True), (None, True)]
    assert first.headers["X-Gateway-Notice"].startswith("storage_unavailable")
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert len(gateway.standin.received) == 1
    assert _files_in(full_folder) == []  # no 0-byte or partial images left behind


def test_an_upload_that_cannot_be_spooled_is_a_503_and_leaves_no_file(
    gateway: Gateway, settings: Any, full_folder: Path
) -> None:
    settings.FILE_UPLOAD_TEMP_DIR = str(full_folder)
    big = PNG + b"\0" * 300_000  # larger than FILE_UPLOAD_MAX_MEMORY_SIZE: spooled to disk
    assert len(big) > settings.FILE_UPLOAD_MAX_MEMORY_SIZE

    response = gateway.edit(files=[("image", ("big.png", big, "image/png"))], data={"prompt": "x"})

    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("storage_unavailable", "server_error")
    assert response.headers["Retry-After"]
    assert gateway.standin.received == []
    assert _files_in(full_folder) == []
    assert requests.get(gateway.url + "/healthz", timeout=5).status_code == 200
