"""The seed page's own example, verbatim: its entity (quality "hd" on gpt-image-1) and plugin blocks
import as written, and its curl (the real curl binary) returns an edited image."""

from __future__ import annotations

import base64
import io
import json
import subprocess
from pathlib import Path
from typing import Any

from PIL import Image

from entities.interchange import entities_import
from tests.standin import StandIn, image_bytes

# From ../shared/reference/seed-image-editing.txt ("Entity configuration" and "Plugin configuration");
# the page leaves out the entity's id and name, and its base_url is replaced by the stand-in's.
SEED_ENTITY: dict[str, Any] = {
    "provider": "openai",
    "config": {
        "connection": {"base_url": "https://api.openai.com/v1", "token": "sk-xxx", "timeout": 180000},
        "options": {
            "generation": {"enabled": True, "model": "gpt-image-1"},
            "edition": {"enabled": True, "model": "gpt-image-1", "n": 1, "quality": "hd", "size": "1024x1024"},
        },
    },
}
SEED_PLUGIN: dict[str, Any] = {
    "enabled": True,
    "plugin": "cp:otoroshi_plugins.com.cloud.apim.otoroshi.extensions.aigateway.plugins.OpenAICompatImagesEdit",
    "config": {"refs": ["image-model-entity-id"], "max_size_upload": 104857600},
}


def test_the_seed_page_entity_imports_and_its_curl_returns_an_edited_image(
    live_server: Any, standin: StandIn, transactional_db: None, tmp_path: Path
) -> None:
    entity = json.loads(json.dumps(SEED_ENTITY))
    entity["config"]["connection"]["base_url"] = standin.openai_url
    entities_import(
        data={
            "image_models": [{"id": "image-model-entity-id", "name": "OpenAI", **entity}],
            "routes": [
                {
                    "id": "myroute",
                    "name": "My route",
                    "frontend": {"domains": ["myroute.oto.tools"]},
                    "plugins": [SEED_PLUGIN],
                }
            ],
        }
    )
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes("png", (64, 64)))
    port = live_server.url.rsplit(":", 1)[1]

    # The page's command, with the live server's address resolved for the route's host name.
    result = subprocess.run(
        [
            "curl", "--silent", "--show-error", "--resolve", f"myroute.oto.tools:{port}:127.0.0.1",
            "--request", "POST",
            "--url", f"http://myroute.oto.tools:{port}/v1/images/edits",
            "--header", "content-type: multipart/form-data",
            "-F", "image=@photo.png",
            "-F", "prompt=add a red hat to the person",
            "-F", "model=gpt-image-1",
            "-F", "n=1",
            "-F", "size=1024x1024",
        ],
        cwd=tmp_path, capture_output=True, timeout=30, check=True,
    )  # fmt: skip

    answer = json.loads(result.stdout)
    assert "error" not in answer, answer
    Image.open(io.BytesIO(base64.b64decode(answer["data"][0]["b64_json"]))).verify()
    sent = standin.last.fields
    assert sent["prompt"] == "add a red hat to the person"
    assert sent["quality"] == "high"  # the page's "hd", in gpt-image's own words
    assert (sent["model"], sent["n"], sent["size"]) == ("gpt-image-1", "1", "1024x1024")
    assert standin.last.headers["authorization"] == "Bearer sk-xxx"
