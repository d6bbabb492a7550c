"""The README's "Other clients" examples, run as written against the demo seed that `make run` loads
(its route on localhost, served by the built-in local provider): the Node one with node and the
locked SDK, the LiteLLM one in this process. Only the gateway's address differs.
"""

from __future__ import annotations

import io
import re
import subprocess
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from django.core.management import call_command

from edits_api.models import UsageRecord

ROOT = Path(__file__).resolve().parents[2]
README_URL = "http://127.0.0.1:8000"


def _example(language: str) -> str:
    """The one fenced block of `language` in the README's "Other clients" section."""
    section = (ROOT / "README.md").read_text().split("\n## Other clients\n", 1)[1].split("\n## ", 1)[0]
    [code] = [code for lang, code in re.findall(r"```(\w+)\n(.*?)```", section, re.S) if lang == language]
    assert README_URL in code
    return code


def _demo_seed() -> None:
    call_command("seed_entities", stdout=io.StringIO())


def test_readme_node_example_edits_on_the_demo_route(
    live_server: Any, transactional_db: None, node_sdk: Path, tmp_path: Path
) -> None:
    _demo_seed()
    # Written beside a link to the locked packages, so `import 'openai'` resolves as in a project.
    script = tmp_path / "example.mjs"
    script.write_text(_example("js").replace(README_URL, live_server.url))
    (tmp_path / "node_modules").symlink_to(node_sdk / "node_modules")

    done = subprocess.run(["node", str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0  # the length of the edited image's base64
    [record] = UsageRecord.objects.all()
    assert (record.endpoint, record.image_model_id, record.status) == ("edits", "demo-local", 200)


def test_readme_litellm_example_generates_and_edits_on_the_demo_route(
    live_server: Any, transactional_db: None, monkeypatch: Any
) -> None:
    _demo_seed()
    monkeypatch.chdir(ROOT)  # the example opens examples/photo.png
    printed = io.StringIO()

    with redirect_stdout(printed):
        exec(_example("python").replace(README_URL, live_server.url), {})

    # The last line: LiteLLM logs its calls first here, where the root logger is at INFO (LOG_LEVEL).
    assert printed.getvalue().splitlines()[-1] == "1 1"
    records = UsageRecord.objects.order_by("id")
    assert [(r.endpoint, r.image_model_id, r.status) for r in records] == [
        ("generations", "demo-local", 200),
        ("edits", "demo-local", 200),
    ]
