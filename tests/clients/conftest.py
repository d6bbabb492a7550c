"""The gateway as clients nobody here wrote see it: route `clients` serves edits and generations
over an OpenAI-wire and a Gemini-wire image model (the stand-in behind both), behind a client key.

Clients name the image model with the contract's `X/model` form (§3.2), which every OpenAI client
can send in its `model` field.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from entities.models import Route
from tests.gateway import make_image_model, make_key, make_route
from tests.standin import StandIn

# LiteLLM must not reach the network: it reads its model cost map from the package instead of
# fetching it at import, and fetches nothing else on its own. It reads both when imported, and this
# file is imported before any test module here.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["LITELLM_OFFLINE_MODE"] = "true"

NODE_DIR = Path(__file__).resolve().parent / "node"
CLIENT_KEY = "gw-clients-test-key-5151"
ROUTE_ID = "clients"
OPENAI_WIRE = "img-openai/gpt-image-1"
GEMINI_WIRE = "img-gemini/gemini-3.1-flash-image"  # a gemini-3 model: the stand-in adds "thought" parts


def serve_both_wires(standin: StandIn) -> Route:
    """The route, its two image models and the key that opens it."""
    openai = make_image_model(
        "img-openai",
        "openai",
        standin,
        edition={"enabled": True, "model": "gpt-image-1"},
        generation={"enabled": True, "model": "gpt-image-1"},
    )
    gemini = make_image_model("img-gemini", "gemini", standin, edition={"enabled": True}, generation={"enabled": True})
    # No fallback: each answer comes from the image model the client named.
    route = make_route(
        ROUTE_ID,
        ["localhost", "127.0.0.1"],
        [openai, gemini],
        generation_refs=[openai, gemini],
        edit_fallback=False,
        generation_fallback=False,
    )
    make_key("clients-key", CLIENT_KEY, [route])
    return route


@pytest.fixture
def both_wires(live_server: Any, standin: StandIn, transactional_db: None) -> Iterator[str]:
    """The live gateway's /v1 base URL, with route `clients` in place."""
    serve_both_wires(standin)
    yield live_server.url + "/v1"


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    """tests/clients/node with its locked packages: `npm ci` when they are missing or not the pinned
    version, so `make test` and CI need nothing installed beforehand but node and npm."""
    npm, node = shutil.which("npm"), shutil.which("node")
    assert npm and node, "the Node SDK tests need node and npm on PATH"
    installed = NODE_DIR / "node_modules" / "openai" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != pinned_node_sdk():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return NODE_DIR


def pinned_node_sdk() -> str:
    return str(json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["openai"])


def decoded_image(b64_json: str | None) -> Image.Image:
    """The image a base64 answer carries, fully decoded (a truncated or fake image raises)."""
    assert isinstance(b64_json, str) and b64_json
    image = Image.open(io.BytesIO(base64.b64decode(b64_json, validate=True)))
    image.load()
    return image


def assert_openai_usage(usage: Any) -> None:
    """`usage` in OpenAI's shape (contract §3.5), with counts that add up."""
    assert isinstance(usage, dict), usage
    assert {"input_tokens", "input_tokens_details", "output_tokens", "total_tokens"} <= usage.keys(), usage
    details = usage["input_tokens_details"]
    assert set(details) == {"text_tokens", "image_tokens"}, usage
    counts = [usage["input_tokens"], usage["output_tokens"], usage["total_tokens"], *details.values()]
    assert all(isinstance(count, int) and count >= 0 for count in counts), usage
    assert details["text_tokens"] + details["image_tokens"] == usage["input_tokens"], usage
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"], usage
