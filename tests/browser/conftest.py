"""The browser suite's fixtures: Debian's Chromium driven by Playwright, against the gateway served
by gunicorn (as `make run` serves it) on the test database, with a stand-in provider beside it.

One gunicorn and one browser per module; every test gets a fresh browser context (no cookies) and
a flushed database (transactional_db), and logs in through the real login form.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.contrib.auth import get_user_model
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.gunicorn import free_port, server_environment
from tests.standin import StandIn

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # gitignored; kept after the run
DOCS = ROOT / "docs"
# Set to 1 to refresh the README's screenshots in docs/ from this run.
UPDATE_DOCS = os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1"
DOCS_MAX_BYTES = 300_000
# Provider tokens are written ${env.BROWSER_PROVIDER_TOKEN}, read by the server from its environment.
TOKEN_VARIABLE = "BROWSER_PROVIDER_TOKEN"
PROVIDER_TOKEN = "sk-browser-suite-secret-4417"
OPERATOR = ("operator", "operator-password-9f3k2")
VIEWPORT = {"width": 1280, "height": 860}


class Server:
    """`gunicorn -c gunicorn.conf.py` on 127.0.0.1 with DEBUG off; `restart` keeps port and database."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = server_environment(
            workdir,
            PORT=str(self.port),
            GUNICORN_THREADS="8",
            GUNICORN_GRACEFUL_TIMEOUT="1",  # kept-alive browser connections must not hold a restart
            ROUTE_CACHE_SECONDS="0",  # each test's entities are seen at once
            **{TOKEN_VARIABLE: PROVIDER_TOKEN},
        )
        (workdir / "metrics").mkdir(exist_ok=True)  # manage.py commands count into it too
        self.process: subprocess.Popen[bytes] | None = None
        self.log = workdir / "gunicorn.log"

    def manage(self, *args: str) -> str:
        """`manage.py` with the server's environment (its database), e.g. what `make run` runs first."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "gateway_project.wsgi:application"],
                cwd=ROOT, env=self.env, stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 90  # a loaded machine starts Python slowly
        while True:
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"gunicorn did not start: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's Chromium (`apt-get install -y chromium`, as .ci/run does)"
        )
    # Playwright's sync API runs an event loop in this thread; Django's ORM would then refuse the
    # tests' own queries, which are plain synchronous ones. Only while this module's browser lives.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    served = Server(tmp_path_factory.mktemp("gunicorn"))
    # As `make run`: the admin's CSS and /docs' assets are served from STATIC_ROOT with DEBUG off.
    served.manage("collectstatic", "--noinput", "--verbosity", "0")
    served.start()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def module_standin() -> Iterator[StandIn]:
    """The stand-in provider, shared by the module's tests (reset before each)."""
    with StandIn() as standin:
        yield standin


@pytest.fixture
def gateway(server: Server, module_standin: StandIn, transactional_db: None) -> Server:
    module_standin.reset()
    return server


@pytest.fixture
def page(browser: Browser, gateway: Server, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(base_url=gateway.url, viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    opened = context.new_page()
    yield opened
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        shoot(opened, f"FAILED-{request.node.name}")
    context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]  # read by the `page` fixture
    return report


@pytest.fixture
def operator(transactional_db: None) -> tuple[str, str]:
    username, password = OPERATOR
    get_user_model().objects.create_superuser(username, email="operator@example.com", password=password)
    return username, password


def log_in(page: Page, credentials: tuple[str, str]) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", credentials[0])
    page.fill("#id_password", credentials[1])
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(credentials[0])


def shoot(page: Page, name: str, *, docs: str | None = None) -> Path:
    """A full-page screenshot kept in tests/browser/artifacts/; with `docs` and
    UPDATE_DOCS_SCREENSHOTS=1, also written to docs/<docs> in a palette PNG small enough for git."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if docs and UPDATE_DOCS:
        DOCS.mkdir(exist_ok=True)
        _small_png(path, DOCS / docs)
    return path


def _small_png(source: Path, target: Path) -> None:
    with Image.open(source) as image:
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG", optimize=True)
    if buffer.tell() > DOCS_MAX_BYTES:
        raise AssertionError(f"{target.name} would be {buffer.tell()} bytes; keep README screenshots small")
    target.write_bytes(buffer.getvalue())
