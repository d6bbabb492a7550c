"""LiteLLM's proxy beside the gateway, on the same stand-in: installed in its own virtualenv
(`.bench-litellm/`, git-ignored) when missing, started with a master key and no database on
127.0.0.1, stopped by PID.

    .venv/bin/python -m bench.litellm   # installs it if needed, starts it, makes one edit, stops
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import PROVIDER_TOKEN, ROOT, descendants, free_port, log

VERSION = "1.108.7"  # the version the table was measured with
VENV = ROOT / ".bench-litellm"
MASTER_KEY = "sk-bench-litellm-master"


def ensure_installed() -> Path:
    """The proxy's executable, installing `litellm[proxy]` into .bench-litellm/ first if needed."""
    executable = VENV / "bin" / "litellm"
    if executable.exists():
        return executable
    log(f"installing litellm[proxy]=={VERSION} into {VENV} (once; a few minutes)")
    # The interpreter the project's venv was made from, not the venv's own (its packages stay out).
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base_python), "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", f"litellm[proxy]=={VERSION}"], check=True)
    return executable


def _config(standin_openai_url: str, model: str) -> dict[str, object]:
    return {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": standin_openai_url,
                    "api_key": PROVIDER_TOKEN,
                },
            }
        ],
        "general_settings": {"master_key": MASTER_KEY},
        "litellm_settings": {"telemetry": False, "request_timeout": 600},
    }


@dataclass
class LiteLLM:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid, *descendants(self.proc.pid)]

    @property
    def authorization(self) -> str:
        return f"Bearer {MASTER_KEY}"


@contextlib.contextmanager
def litellm_proxy(standin_openai_url: str, model: str = "gpt-image-1") -> Iterator[LiteLLM]:
    executable = ensure_installed()
    with tempfile.TemporaryDirectory(prefix="litellm-bench-") as tmp:
        config = Path(tmp) / "config.json"  # YAML is a superset of JSON
        config.write_text(json.dumps(_config(standin_openai_url, model)))
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VIRTUAL_ENV")},
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price list: loopback only
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
            "DISABLE_SCHEMA_UPDATE": "true",
            "HOME": tmp,
        }
        log_path = Path(tmp) / "litellm.log"
        with open(log_path, "wb") as log_file:
            command = [str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
            proc = subprocess.Popen(command, cwd=tmp, env=env, stdout=log_file, stderr=subprocess.STDOUT)
            try:
                _wait_ready(proc, port, log_path)
                yield LiteLLM(port, proc, log_path)
            finally:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"litellm exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health/liveliness")
            if conn.getresponse().status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"litellm not ready after 120 s:\n{log_path.read_text()[-3000:]}")


if __name__ == "__main__":
    from bench.common import StandInProcess, edit_body, noise_png

    body, content_type = edit_body(noise_png(10_000))
    with StandInProcess() as standin, litellm_proxy(standin.openai_url) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        conn.request(
            "POST", "/v1/images/edits", body, {"Content-Type": content_type, "Authorization": proxy.authorization}
        )
        answer = conn.getresponse()
        print(answer.status, answer.read()[:300])
