"""What the benchmarks share: a gateway under gunicorn on a fresh database, lean stand-in
providers, a threaded keep-alive load generator, /proc accounting, and the report format."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import math
import os
import random
import resource
import runpy
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EDIT_PLUGIN = "cp:otoroshi_plugins.com.cloud.apim.otoroshi.extensions.aigateway.plugins.OpenAICompatImagesEdit"
API_KEY = "bench-client-key-" + "0" * 16
PROVIDER_TOKEN = "sk-bench-provider"
# Fixed, so tokens stored by an earlier run in a reused DATABASE_URL still decrypt.
BENCH_SECRET_KEY = "bench-only-secret-key-" + "x" * 40
CLK_TCK = os.sysconf("SC_CLK_TCK")
NOTE = "load generator, stand-ins and gateway share this machine's cores; figures include that contention"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- /proc accounting -------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time all cores spent not idle since boot (/proc/stat), to spot other load on the machine."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK  # minus idle and iowait


def _status_kb(path: str, key: str) -> int:
    """A number from a /proc status-like file (kB for sizes), 0 when gone."""
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_mb(pids: list[int]) -> float:
    return sum(_status_kb(f"/proc/{pid}/status", "VmRSS") for pid in pids) / 1024


def pss_mb(pids: list[int]) -> float:
    return sum(_status_kb(f"/proc/{pid}/smaps_rollup", "Pss") for pid in pids) / 1024


class RssSampler:
    """Samples the summed RSS, and each process's thread count, every `interval` s; keeps the peaks."""

    def __init__(self, pids: list[int], interval: float = 0.02) -> None:
        self.pids, self.interval = pids, interval
        self.peak = 0.0
        self.peak_threads: dict[int, int] = dict.fromkeys(pids, 0)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, rss_mb(self.pids))
        for pid in self.pids:
            self.peak_threads[pid] = max(self.peak_threads[pid], _status_kb(f"/proc/{pid}/status", "Threads"))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# --- test data --------------------------------------------------------------------------------


def noise_png(approx_bytes: int) -> bytes:
    """A real RGB PNG of random pixels, about `approx_bytes` long (noise does not compress)."""
    from PIL import Image

    side = max(1, int(math.sqrt(approx_bytes / 3)))
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), random.randbytes(side * side * 3)).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


BOUNDARY = "----bench" + "7" * 24


def multipart_parts(fields: dict[str, str], filename: str) -> tuple[bytes, bytes, str]:
    """The bytes before and after one `image` file part (as openai-python sends it), and the type."""
    head = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    head += (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head, f"\r\n--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def edit_body(png: bytes, prompt: str = "Make the sky purple", model: str = "gpt-image-1") -> tuple[bytes, str]:
    head, tail, content_type = multipart_parts({"prompt": prompt, "model": model}, "image.png")
    return head + png + tail, content_type


# --- stand-in providers -----------------------------------------------------------------------


class StandInProcess:
    """bench/standin.py in its own process, so it competes with nobody's GIL."""

    def __init__(self, hold: float = 0.0, answer_kb: int = 0) -> None:
        self.hold = hold
        self.answer_kb = answer_kb
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def __enter__(self) -> StandInProcess:
        command = [sys.executable, "-m", "bench.standin", "--hold", str(self.hold), "--answer-kb", str(self.answer_kb)]
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"stand-in did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset_peak(self) -> None:
        """`max_in_flight` starts again from now (one stand-in serves every stack of a run)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request("POST", "/stats/reset")
        conn.getresponse().read()
        conn.close()

    def stats(self) -> dict[str, int]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request("GET", "/stats")
        stats: dict[str, int] = json.loads(conn.getresponse().read())
        conn.close()
        return stats


# --- the gateway ------------------------------------------------------------------------------


def image_model_entity(id: str, base_url: str, provider: str = "openai", model: str = "gpt-image-1") -> dict[str, Any]:
    return {
        "id": id,
        "name": id,
        "provider": provider,
        "config": {
            "connection": {"base_url": base_url, "token": PROVIDER_TOKEN, "timeout": 60000},
            "options": {"edition": {"enabled": True, "model": model}},
        },
    }


def route_entity(id: str, domains: list[str], refs: list[str], max_size_upload: int = 100 * 2**20) -> dict[str, Any]:
    plugin = {"enabled": True, "plugin": EDIT_PLUGIN, "config": {"refs": refs, "max_size_upload": max_size_upload}}
    return {"id": id, "name": id, "enabled": True, "frontend": {"domains": domains}, "plugins": [plugin]}


def entities(image_models: list[dict[str, Any]], routes: list[dict[str, Any]]) -> dict[str, Any]:
    """The entity file; every route needs the bench API key (so the auth path is measured too)."""
    key = {"id": "bench-key", "name": "bench", "enabled": True, "secret": API_KEY, "routes": [r["id"] for r in routes]}
    return {"image_models": image_models, "routes": routes, "api_keys": [key]}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def expected_workers() -> int:
    """`workers` as gunicorn.conf.py computes it from this environment."""
    return int(runpy.run_path(str(ROOT / "gunicorn.conf.py"))["workers"])


def gunicorn_threads(env: dict[str, str]) -> str:
    """`threads` as gunicorn.conf.py computes it from `env` (granian gets as many blocking threads)."""
    return env.get("GUNICORN_THREADS") or str(runpy.run_path(str(ROOT / "gunicorn.conf.py"))["threads"])


# The stock gthread worker is measured as it was served before: 512 threads, 512 pooled provider
# connections, 1000 connections per worker.
BEFORE_ENV = {"GUNICORN_THREADS": "512", "PROVIDER_POOL_SIZE": "512", "GUNICORN_WORKER_CONNECTIONS": "1000"}


def get(port: int, path: str, timeout: float = 2.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@dataclass
class Gateway:
    """A running `gunicorn -c gunicorn.conf.py` on a fresh database seeded with the bench entities."""

    workdir: Path
    port: int
    proc: subprocess.Popen[bytes]
    ready_s: float
    log_path: Path
    server: str = "gunicorn"

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid, *descendants(self.proc.pid)]

    @property
    def worker_pids(self) -> list[int]:
        """The processes that serve requests (granian and uvicorn: the children with Python threads)."""
        return children(self.proc.pid)

    def log_problems(self) -> dict[str, Any]:
        """How many WARNING/ERROR lines the gateway logged, and the first few distinct ones."""
        lines = [line for line in self.log_path.read_text(errors="replace").splitlines()
                 if " WARNING " in line or " ERROR " in line or "[ERROR]" in line or "[WARNING]" in line]  # fmt: skip
        distinct = list(dict.fromkeys(line.split(" ", 3)[-1][:160] for line in lines))
        return {"count": len(lines), "first": distinct[:5]}


# How each serving stack starts the same Django project (`server` of `gateway()`, `--server` of
# bench.all). PORT, HOST and the GUNICORN_*/GRANIAN_* variables of the environment apply.
# gunicorn-gthread is gunicorn with its stock threaded worker, as served before gateway_project/gworker.py.
# The *-floor servers do not serve the project: they serve the least an edit path must do (no database,
# no auth, no validation), to bound such a path from below: bench/async_floor.py (async Django) and
# bench/wsgi_floor.py under the project's gunicorn worker or granian (plain WSGI, Django's handler around
# it, and the server alone with no provider call).
WSGI_FLOORS = {
    "gunicorn-wsgi-floor": "application",
    "gunicorn-django-floor": "django_application",
    "gunicorn-serve-floor": "serve_application",
}
GRANIAN_WSGI = {
    "granian-wsgi": "gateway_project.wsgi:application",
    "granian-wsgi-floor": "bench.wsgi_floor:application",
    "granian-serve-floor": "bench.wsgi_floor:serve_application",
}
FLOOR_SERVERS = (
    "uvicorn-async-floor",
    "granian-async-floor",
    *(server for server in GRANIAN_WSGI if server.endswith("-floor")),
    *WSGI_FLOORS,
)
SERVERS = ("gunicorn", "gunicorn-before", "gunicorn-gthread", "granian-wsgi", "uvicorn-asgi", *FLOOR_SERVERS)


def floor_env(seed: dict[str, Any]) -> dict[str, str]:
    """bench/async_floor.py's settings: each route's path prefix mapped to its first image model's
    base URL (the lookup the real gateway does per request, done once here), and the token."""
    base_urls = {m["id"]: m["config"]["connection"]["base_url"] for m in seed["image_models"]}
    providers = {}
    for route in seed["routes"]:
        ref = route["plugins"][0]["config"]["refs"][0]
        for domain in route["frontend"]["domains"]:
            _, _, prefix = domain.partition("/")
            providers["/" + prefix if prefix else ""] = base_urls[ref]
    return {"FLOOR_PROVIDERS": json.dumps(providers), "FLOOR_PROVIDER_TOKEN": PROVIDER_TOKEN}


def before_root() -> Path:
    """`gunicorn-before` serves another checkout of the gateway (BENCH_BEFORE_ROOT, e.g. a
    `git worktree add /tmp/before <commit>`) with this virtualenv: before and after in one run."""
    root = os.environ.get("BENCH_BEFORE_ROOT", "")
    if not root or not (Path(root) / "manage.py").exists():
        raise SystemExit("gunicorn-before needs BENCH_BEFORE_ROOT: a checkout of the gateway to compare with")
    return Path(root)


def server_command(server: str, env: dict[str, str]) -> list[str]:
    port, workers = env["PORT"], str(expected_workers())
    if server in ("gunicorn", "gunicorn-gthread", "gunicorn-before"):
        stock = ["--worker-class", "gthread"] if server == "gunicorn-gthread" else []
        return [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", *stock, "gateway_project.wsgi:application"]
    if server in WSGI_FLOORS:
        return [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", f"bench.wsgi_floor:{WSGI_FLOORS[server]}"]
    if server in GRANIAN_WSGI:
        threads = env.get("GRANIAN_BLOCKING_THREADS") or gunicorn_threads(env)
        app = GRANIAN_WSGI[server]
        return [str(BIN / "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", port,
                "--workers", workers, "--blocking-threads", threads, "--backlog", "4096",
                "--backpressure", env.get("GRANIAN_BACKPRESSURE") or "8192",
                "--no-ws", app]  # fmt: skip
    if server in ("uvicorn-asgi", "uvicorn-async-floor"):
        # --loop and --http stay "auto": uvloop and httptools when installed, as for every uvicorn here.
        app = "gateway_project.asgi:application" if server == "uvicorn-asgi" else "bench.async_floor:application"
        return [str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", port, "--workers", workers,
                "--backlog", "4096", "--no-access-log", app]  # fmt: skip
    if server == "granian-async-floor":
        return [str(BIN / "granian"), "--interface", "asginl", "--host", "127.0.0.1", "--port", port,
                "--workers", workers, "--loop", env.get("GRANIAN_LOOP") or "auto", "--backlog", "4096",
                "--backpressure", env.get("GRANIAN_BACKPRESSURE") or "8192",
                "--no-ws", "bench.async_floor:application"]  # fmt: skip
    raise ValueError(f"unknown server {server!r}; one of {', '.join(SERVERS)}")


def seeded_env(root: Path, workdir: Path, seed: dict[str, Any], extra: dict[str, str]) -> dict[str, str]:
    """The environment of a gateway on a fresh database in `workdir` (unless DATABASE_URL names
    one), migrated and seeded with `seed` by the checkout at `root`."""
    env = {
        **os.environ,
        "DATABASE_URL": os.environ.get("DATABASE_URL") or f"sqlite:///{workdir / 'bench.sqlite3'}",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or BENCH_SECRET_KEY,
        "DEBUG": "false",
        "MEDIA_ROOT": str(workdir / "media"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        **extra,
    }
    (workdir / "metrics").mkdir()
    seed_file = workdir / "entities.json"
    seed_file.write_text(json.dumps(seed))
    for command in (["migrate", "--noinput", "-v", "0"], ["seed_entities", str(seed_file)]):
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=root, env=env, check=True, stdout=subprocess.DEVNULL
        )
    return env


@contextlib.contextmanager
def gateway(
    seed: dict[str, Any], server: str = "gunicorn", env_extra: dict[str, str] | None = None
) -> Iterator[Gateway]:
    root = before_root() if server == "gunicorn-before" else ROOT
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        workdir = Path(tmp)
        env = seeded_env(root, workdir, seed, {
            **(BEFORE_ENV if server == "gunicorn-gthread" else {}),
            **(floor_env(seed) if server in FLOOR_SERVERS else {}),
            **(env_extra or {}),
        })  # fmt: skip
        port = free_port()
        env.update(PORT=str(port), HOST="127.0.0.1")
        log_path = workdir / "gateway.log"
        with open(log_path, "wb") as log_file:
            started = time.monotonic()
            proc = subprocess.Popen(
                server_command(server, env), cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                ready_s = _wait_ready(proc, port, started, log_path)
                gw = Gateway(workdir, port, proc, ready_s, log_path, server)
                _wait_workers(gw)
                yield gw
            finally:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                kept = Path(tempfile.gettempdir()) / "gateway-bench-last.log"
                shutil.copyfile(log_path, kept)
                log(f"gateway log kept in {kept}")


def _wait_ready(proc: subprocess.Popen[bytes], port: int, started: float, log_path: Path) -> float:
    while time.monotonic() - started < 60:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if get(port, "/healthz", timeout=1) == 200:
                return time.monotonic() - started
        time.sleep(0.005)
    raise RuntimeError("gateway not ready after 60 s")


def _wait_workers(gw: Gateway) -> None:
    want = expected_workers()
    deadline = time.monotonic() + 30
    while len(gw.worker_pids) < want and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the last worker finish its boot


# --- load generation --------------------------------------------------------------------------


@dataclass
class LoadSpec:
    port: int
    path: str
    body: bytes
    content_type: str
    total: int
    concurrency: int
    timeout: float = 60.0
    headers: dict[str, str] = field(default_factory=dict)
    pace: float = 0.0  # seconds between the starts of one thread's requests (0: back to back)


@dataclass
class LoadResult:
    latencies: list[float]  # seconds, successful requests only
    errors: int
    statuses: dict[int, int]
    elapsed: float  # wall time of the whole run
    client_cpu: float  # CPU seconds the load generator itself used
    error_samples: list[str] = field(default_factory=list)


def run_load(spec: LoadSpec) -> LoadResult:
    """`total` POSTs over `concurrency` threads, one keep-alive connection each."""
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    headers = {"Content-Type": spec.content_type, "Authorization": f"Bearer {API_KEY}", **spec.headers}

    def worker() -> None:
        nonlocal issued
        conn = http.client.HTTPConnection("127.0.0.1", spec.port, timeout=spec.timeout)
        while True:
            with lock:
                if issued >= spec.total:
                    break
                issued += 1
            began = time.perf_counter()
            next_start = began + spec.pace
            try:
                conn.request("POST", spec.path, body=spec.body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                took = time.perf_counter() - began
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status == 200:
                    latencies.append(took)
                else:
                    errors.append(f"HTTP {response.status}: {payload[:200]!r}")
            if spec.pace:
                time.sleep(max(0.0, next_start - time.perf_counter()))
        conn.close()

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(spec.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return LoadResult(latencies, len(errors), statuses, elapsed, cpu, errors[:5])


@contextlib.contextmanager
def load_process() -> Iterator[ProcessPoolExecutor]:
    """A separate process for a load generator, so its GIL is not the bench's or another's."""
    pool = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"))
    try:
        pool.submit(int).result()  # start it now, not inside a measurement
        yield pool
    except BaseException:
        # Cut short (Ctrl-C, SIGTERM): stop a load still running instead of waiting for it.
        for process in list(pool._processes.values()):  # type: ignore[attr-defined]
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


# --- figures and report -----------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(result: LoadResult) -> dict[str, Any]:
    ms = [v * 1000 for v in result.latencies]
    done = len(result.latencies) + result.errors
    return {
        "requests": done,
        "errors": result.errors,
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else math.nan,
        "rps": round(done / result.elapsed, 1) if result.elapsed else math.nan,
        "client_cpu_ms_per_req": round(result.client_cpu * 1000 / done, 3) if done else math.nan,
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "error_samples": result.error_samples,
    }


@dataclass
class Row:
    figure: str
    value: str
    target: str = ""
    ok: bool | None = None


def fmt(value: float, unit: str = "", digits: int = 2) -> str:
    return f"{value:.{digits}f}{unit}"


def report(title: str, rows: list[Row], data: dict[str, Any], extra: str = "") -> None:
    """The figures as a small table (and any `extra` text), then the same run as JSON."""
    widths = [max(len(r.figure) for r in rows), max(len(r.value) for r in rows), max(len(r.target) for r in rows)]
    print(f"\n{title}\n{'=' * len(title)}")
    print(f"{'figure':<{widths[0]}}  {'measured':<{widths[1]}}  {'target':<{widths[2]}}  ok")
    for row in rows:
        mark = "" if row.ok is None else ("yes" if row.ok else "NO")
        print(f"{row.figure:<{widths[0]}}  {row.value:<{widths[1]}}  {row.target:<{widths[2]}}  {mark}".rstrip())
    print(f"note: {NOTE}\n")
    if extra:
        print(extra + "\n")
    code = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    data = {
        "benchmark": title,
        "code": code.stdout.strip(),
        "rows": [asdict(r) for r in rows],
        **data,
        "note": NOTE,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(data, indent=2, default=str))
