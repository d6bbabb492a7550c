"""Instructions per edit, counted by callgrind: the gateway's WSGI app called in one process, edit
after edit (100 KB PNG, the bench stand-in as provider). Timings on a shared 2-CPU machine move
10-30% between identical runs; this count moves about 1.5%, so it is what tells whether a change
to the edit path made it cheaper. It counts the app and its ledger writer thread, not gunicorn.

    .venv/bin/python -m bench.instructions                         # this checkout
    .venv/bin/python -m bench.instructions /tmp/before .           # another checkout beside it
    .venv/bin/python -m bench.instructions --edits 400 --warmup 200

Each checkout runs twice under valgrind after `--warmup` edits: once with 100 more edits, once
with 100 + `--edits`; the difference over `--edits` is the figure, so imports, migrations and
warm-up cancel out. The route cache is pinned (a re-read every second of valgrind's slowed clock
landed every ~14 edits and moved the count more than most changes) and the ledger writer flushes
every 5 s. Checkouts run in parallel, one per CPU. Needs valgrind (`apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    API_KEY,
    StandInProcess,
    edit_body,
    entities,
    image_model_entity,
    log,
    noise_png,
    route_entity,
    seeded_env,
)

BASE_EDITS = 100
SETTINGS = {"ROUTE_CACHE_SECONDS": "1000000", "LEDGER_FLUSH_SECONDS": "5", "LOG_LEVEL": "INFO"}


def child(edits: int) -> None:
    """Runs inside valgrind, in the checkout being measured: `edits` edits through the WSGI app."""
    from gateway_project.wsgi import application

    body, content_type = edit_body(noise_png(100_000))
    statuses: list[str] = []

    def edit() -> None:
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/images/edits", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1",
            "HTTP_AUTHORIZATION": f"Bearer {API_KEY}", "CONTENT_TYPE": content_type,
            "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1", "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.version": (1, 0),
            "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
        }  # fmt: skip
        answer = application(environ, lambda status, headers, exc_info=None: statuses.append(status))
        b"".join(answer)
        answer.close()

    for _ in range(edits):
        edit()
    if not statuses or any(not status.startswith("200") for status in statuses):
        raise SystemExit(f"an edit failed: {sorted(set(statuses))}")


def _count(root: Path, env: dict[str, str], edits: int) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        # `-c`, not the script's path: the checkout (cwd) comes first on sys.path, not bench/.
        script = str(Path(__file__).resolve())
        run = (
            f"import runpy, sys; sys.argv = ['x', '--child', '{edits}']; "
            f"runpy.run_path({script!r}, run_name='__main__')"
        )
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c", run]
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{root}: the run under valgrind failed:\n{done.stderr[-2000:]}")
        totals = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if totals is None:
            raise RuntimeError(f"{root}: callgrind wrote no totals")
        return int(totals.group(1))


def measure(root: Path, provider_url: str, warmup: int, edits: int) -> dict[str, Any]:
    """Instructions per edit for the checkout at `root`, on its own fresh SQLite database."""
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        seed = entities(
            [image_model_entity("bench-openai", provider_url)], [route_entity("bench", ["127.0.0.1"], ["bench-openai"])]
        )
        # Its own SQLite database always: a shared DATABASE_URL would mix the checkouts' rows.
        env = seeded_env(root, Path(tmp), seed, {**SETTINGS, "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3"})
        short = _count(root, env, warmup + BASE_EDITS)
        long = _count(root, env, warmup + BASE_EDITS + edits)
    code = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    return {
        "root": str(root),
        "code": code.stdout.strip() or "?",
        "instructions_per_edit": round((long - short) / edits),
        "runs": {"short": short, "long": long},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="*", type=Path, help="checkouts to measure (default: this one)")
    parser.add_argument("--edits", type=int, default=200, help="edits counted (the difference between the runs)")
    parser.add_argument("--warmup", type=int, default=100, help="edits before either run's count starts")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    roots = [root.resolve() for root in args.roots] or [Path(__file__).resolve().parent.parent]
    with StandInProcess() as standin, concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        log(f"counting {args.edits} edits after {args.warmup + BASE_EDITS} in {len(roots)} checkout(s) under callgrind")
        results = list(pool.map(lambda root: measure(root, standin.openai_url, args.warmup, args.edits), roots))
    for result in results:
        per_edit = result["instructions_per_edit"] / 1e6
        print(f"{result['code']:>10}  {per_edit:.3f} M instructions per edit  {result['root']}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
