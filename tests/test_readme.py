"""The README's "Try an edit" examples, run exactly as written against `make run`'s set-up: the demo
seed, gunicorn with gunicorn.conf.py, the built-in local provider. Only the port differs.

The real-provider example runs too, with the demo OpenAI entity pointed at the stand-in through
DEMO_OPENAI_BASE_URL, as the README says an operator may.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests
from django.core.management import call_command
from PIL import Image

from edits_api.models import UsageRecord
from tests.gunicorn import ROOT, gunicorn
from tests.standin import StandIn

README = ROOT / "README.md"
README_URL = "http://127.0.0.1:8000"
PROVIDER_KEY = "sk-readme-example-key-4821"


def examples(section: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block in one README section."""
    text = README.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", body, re.S)


def example(language: str, *needles: str, section: str = "Try an edit") -> str:
    found = [code for lang, code in examples(section) if lang == language and all(n in code for n in needles)]
    assert len(found) == 1, f"no single {language} example in {section!r} holding {needles}"
    return found[0]


@pytest.fixture(scope="module")
def server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One gunicorn for the module (starting one takes seconds); each test seeds its own database."""
    # ROUTE_CACHE_SECONDS=0: each test's fresh seed is read at once, not a snapshot of the last one.
    with gunicorn(tmp_path_factory.mktemp("readme"), OPENAI_API_KEY=PROVIDER_KEY, ROUTE_CACHE_SECONDS="0") as url:
        yield url


@pytest.fixture
def made_run(server: str, transactional_db: None, standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> str:
    """What `make run` leaves behind: the demo seed, served by gunicorn; returns the base URL."""
    monkeypatch.setenv("DEMO_OPENAI_BASE_URL", standin.openai_url)
    call_command("seed_entities", stdout=io.StringIO())
    return server


def run_shell(code: str, url: str) -> dict:
    assert README_URL in code
    done = subprocess.run(
        ["sh", "-c", code.replace(README_URL, url)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def run_python(code: str, url: str) -> str:
    assert README_URL in code
    done = subprocess.run(
        [sys.executable, "-c", code.replace(README_URL, url)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def decoded(answer: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(answer["data"][0]["b64_json"])))


def test_the_first_curl_edits_the_photo_with_no_key_and_no_network(made_run: str, standin: StandIn) -> None:
    answer = run_shell(example("sh", "8000/v1/images/edits", "mask=@"), made_run)

    assert set(answer["data"][0]) == {"url", "b64_json", "revised_prompt"}
    image = decoded(answer)
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    original = Image.open(ROOT / "examples/photo.png").convert("RGB").resize((1024, 1024))
    edited = image.convert("RGB")
    assert edited.getpixel((900, 900)) == original.getpixel((900, 900))  # outside the mask: kept
    mask_box = (166 * 2, 40 * 2, 346 * 2, 156 * 2)
    assert edited.crop(mask_box).tobytes() != original.crop(mask_box).tobytes()  # inside: edited
    assert standin.received == []  # the local provider called nobody
    record = UsageRecord.objects.get()
    assert (record.route_id, record.image_model_id, record.provider, record.status) == (
        "demo-route",
        "demo-local",
        "local",
        200,
    )


def test_the_url_curl_answers_a_signed_link_to_the_edited_image(made_run: str) -> None:
    answer = run_shell(example("sh", "response_format=url"), made_run)

    link = answer["data"][0]["url"]
    assert link.startswith(made_run + "/images/") and answer["data"][0]["b64_json"] is None
    fetched = requests.get(link, timeout=10)
    assert fetched.status_code == 200
    image = Image.open(io.BytesIO(fetched.content)).convert("RGB")
    original = Image.open(ROOT / "examples/photo.png").convert("RGB")
    assert image.size == original.size
    sun, sky = image.getpixel((511 - 415, 85)), image.getpixel((415, 85))  # mirrored: the sun is now left
    assert sun[0] > sun[1] > sun[2] and sky[0] > sky[1] > sky[2]  # sepia everywhere, no blue sky
    assert sum(sun) > sum(sky) + 15  # the (brighter) sun moved to the left


def test_the_generation_curl_draws_an_image_from_the_prompt(made_run: str) -> None:
    code = example("sh", "8000/v1/images/generations", section="Generate an image")

    first, again = run_shell(code, made_run), run_shell(code, made_run)

    image = decoded(first)
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert first["data"][0]["b64_json"] == again["data"][0]["b64_json"]  # the same prompt, the same image
    assert UsageRecord.objects.filter(endpoint="generations", image_model_id="demo-local", status=200).count() == 2


def test_the_sdk_generation_example_runs_with_the_client_of_the_edit_example(made_run: str) -> None:
    edit = example("python", "client.images.edit(")
    client = edit[: edit.index("result = ")]  # the import and the client, as a reader carries them over
    code = client + example("python", "client.images.generate(", section="Generate an image")

    done = run_python(code, made_run)

    assert done.splitlines() == ["2 None"]  # two images; the local provider reports no token usage


def test_the_sdk_example_runs_as_written(made_run: str) -> None:
    link = run_python(example("python", "client.images.edit("), made_run).strip()

    fetched = requests.get(link, timeout=10)
    assert fetched.status_code == 200
    image = Image.open(io.BytesIO(fetched.content)).convert("RGB")
    assert image.size == (512, 512)
    red, green, blue = image.getpixel((448, 430))  # the hat, laid along the bottom right
    assert red > 150 and green < 80 and blue < 80


def test_the_real_provider_curl_goes_to_openai_under_the_openai_prefix(made_run: str, standin: StandIn) -> None:
    answer = run_shell(example("sh", "/openai/v1/images/edits"), made_run)

    assert decoded(answer).format == "PNG"
    request = standin.last
    assert request.path == "/v1/images/edits"
    assert request.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert (request.fields["model"], request.fields["prompt"]) == ("gpt-image-1", "add a red hat to the person")
    assert [part.name for part in request.files] == ["image", "mask"]
    assert UsageRecord.objects.get().route_id == "demo-providers"
