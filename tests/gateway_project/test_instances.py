"""Two gateway instances on different ports over one database, one Redis and one S3-compatible
store (moto's server on 127.0.0.1, through django-storages): what one instance does, the other sees.

This is the production topology of the README (load balancer, instances, PostgreSQL, Redis,
object storage) on one machine; CI runs it on PostgreSQL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import boto3
import pytest
import redis
import requests

from tests.edits_api.test_served import multipart, padded_png
from tests.gateway import make_image_model, make_route
from tests.gunicorn import free_port, gunicorn
from tests.relay import Relay
from tests.standin import StandIn

pytestmark = pytest.mark.slow

# Our own Redis database number, so the shared breaker state of this test touches nobody else's.
REDIS_URL = "redis://127.0.0.1:6379/13"
BUCKET = "gateway-images"
S3_KEYS = {"access_key": "testing", "secret_key": "testing", "region_name": "us-east-1"}


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[str]:
    """moto's S3 server on a free loopback port, with an empty bucket."""
    port = free_port()
    log = (tmp_path / "moto.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(endpoint + "/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=S3_KEYS["access_key"],
            aws_secret_access_key=S3_KEYS["secret_key"],
            region_name=S3_KEYS["region_name"],
        )
        s3.create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def two_instances(transactional_db: None, standin: StandIn, s3_endpoint: str, tmp_path: Path) -> Iterator[list[str]]:
    make_route("shared", ["127.0.0.1"], [make_image_model("img-openai", "openai", standin)])
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = {
        "GUNICORN_THREADS": "4",
        "REDIS_URL": REDIS_URL,
        "MEDIA_STORAGE_BACKEND": "storages.backends.s3.S3Storage",
        "MEDIA_STORAGE_OPTIONS": json.dumps({"bucket_name": BUCKET, "endpoint_url": s3_endpoint, **S3_KEYS}),
        # Two distinct failed requests open a breaker (the same request sent again counts once).
        "BREAKER_MIN_REQUESTS": "2",
        "BREAKER_COOLDOWN_SECONDS": "60",
    }
    with ExitStack() as stack:
        instances = []
        for name in ("a", "b"):
            instances.append(stack.enter_context(gunicorn(tmp_path / name, **env)))
        yield instances
    redis.Redis.from_url(REDIS_URL).flushdb()


def _edit(instance: str, prompt: str = "add a hat", **fields: str) -> requests.Response:
    body, content_type = multipart(padded_png(5_000))
    body = body.replace(b"add a hat", prompt.encode(), 1)
    if fields:  # extra text fields before the others
        extra = "".join(
            f'--gatewaytestboundary\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
            for k, v in fields.items()
        )
        body = extra.encode() + body
    return requests.post(instance + "/v1/images/edits", data=body, headers={"Content-Type": content_type}, timeout=30)


def test_an_image_link_made_by_one_instance_is_served_by_the_other(two_instances: list[str]) -> None:
    a, b = two_instances

    answer = _edit(a, response_format="url")
    assert answer.status_code == 200, answer.text
    link = answer.json()["data"][0]["url"]
    assert link.startswith(a + "/images/")

    from_a = requests.get(link, timeout=10)
    from_b = requests.get(b + link.removeprefix(a), timeout=10)

    assert from_b.status_code == 200
    assert from_b.headers["Content-Type"] == "image/png"
    assert from_b.content == from_a.content
    assert from_b.content.startswith(b"\x89PNG")


def test_a_breaker_opened_on_one_instance_is_seen_by_the_other(two_instances: list[str], standin: StandIn) -> None:
    a, b = two_instances
    standin.fail_always("500")

    failures = [_edit(a, prompt=f"add hat number {i}").status_code for i in range(2)]
    calls_before = len(standin.received)
    on_b = _edit(b)

    assert failures == [502, 502]
    assert on_b.status_code == 503
    assert on_b.json()["error"]["code"] == "upstream_unavailable"
    assert "img-openai" in on_b.json()["error"]["message"]
    assert len(standin.received) == calls_before  # b did not call the failing provider


def test_a_slow_image_storage_does_not_hold_up_the_other_requests_of_its_worker(
    transactional_db: None, standin: StandIn, s3_endpoint: str, tmp_path: Path
) -> None:
    # One worker, so both requests share its CPU turn; the storage answers through a relay that
    # can make it slow.
    make_route("shared", ["127.0.0.1"], [make_image_model("img-openai", "openai", standin)])
    host, _, port = s3_endpoint.removeprefix("http://").partition(":")
    relay = Relay((host, int(port)))
    storage = {"bucket_name": BUCKET, "endpoint_url": f"http://127.0.0.1:{relay.port}", **S3_KEYS}
    env = {
        "GUNICORN_WORKERS": "1",
        "GUNICORN_THREADS": "8",
        "TURNS_PER_PROCESS": "1",
        "MEDIA_STORAGE_BACKEND": "storages.backends.s3.S3Storage",
        "MEDIA_STORAGE_OPTIONS": json.dumps(storage),
    }
    try:
        with gunicorn(tmp_path / "one", **env) as instance, ThreadPoolExecutor(1) as pool:
            answer = _edit(instance, response_format="url")
            assert answer.status_code == 200, answer.text
            link = answer.json()["data"][0]["url"]

            relay.answer_delay = 1.5  # every storage answer now comes 1.5 s late
            began = time.monotonic()
            image = pool.submit(requests.get, link, timeout=30)
            probes = []  # /healthz, again and again for as long as the image request waits on the storage
            while not image.done():
                time.sleep(0.3)
                started = time.monotonic()
                assert requests.get(instance + "/healthz", timeout=30).status_code == 200
                probes.append(time.monotonic() - started)
            answer = image.result()
            image_s = time.monotonic() - began

            assert answer.status_code == 200
            assert answer.content.startswith(b"\x89PNG")
            assert image_s > 2.5, image_s  # both storage calls (the check, the download) were slow
            # Answered while the image request waited, not after it (it holds the turn otherwise).
            assert max(probes) < 0.5, probes
    finally:
        relay.close()
