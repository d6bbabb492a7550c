"""Every figure of the serving table in one run: the gateway beside LiteLLM's proxy and beside the
stand-in provider called directly, on the same stand-ins, back to back.

    .venv/bin/python -m bench.all [--server gunicorn] [--servers gunicorn granian-wsgi uvicorn-asgi]
                                  [--no-litellm] [--quick]

Figures: overhead p50 at c=1, CPU per 100 KB edit (all processes of the server), req/s at c=16 over
direct, 100 MB upload time over direct and RSS growth, 512 edits held 5 s with a fast route at
20/s beside them, 4,096 edits held at once, 5,000 slow or idle connections with /healthz and a
fast edit still answered. `--servers` measures several serving stacks in the same run (LiteLLM
once). Every count is bounded; everything runs on 127.0.0.1 and is stopped by PID.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import connections
from bench.common import (
    API_KEY,
    ROOT,
    SERVERS,
    LoadSpec,
    RssSampler,
    StandInProcess,
    cpu_seconds,
    edit_body,
    entities,
    gateway,
    image_model_entity,
    load_process,
    log,
    machine_busy_seconds,
    noise_png,
    route_entity,
    rss_mb,
    run_load,
    summary,
)
from bench.litellm import litellm_proxy
from bench.upload import MODEL as UPLOAD_MODEL
from bench.upload import post as upload_post

PATH = "/v1/images/edits"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Counts:
    def __init__(self, quick: bool) -> None:
        self.c1 = 30 if quick else 200
        self.c16 = 100 if quick else 1000
        self.warmup = 20 if quick else 60
        self.upload_mb = 5 if quick else 100
        self.uploads = 1 if quick else 5  # each direct, then through the gateway; medians compared
        self.held_slow = 32 if quick else 512
        self.hold_s = 2.0 if quick else 5.0
        self.fast_s = 3.0 if quick else 8.0  # the fast route's 20/s run lasts this long
        self.many = 128 if quick else 4096
        self.many_hold_s = 3.0 if quick else 10.0
        self.slow_clients = 200 if quick else 5000
        self.slow_hold_s = 8.0 if quick else 20.0


def seed(fast: StandInProcess, slow: StandInProcess, held: StandInProcess) -> dict[str, Any]:
    return entities(
        [
            image_model_entity("bench-openai", fast.openai_url),
            image_model_entity("bench-slow", slow.openai_url),
            image_model_entity("bench-held", held.openai_url),
            image_model_entity("bench-ct", fast.openai_url, "cloud-temple", UPLOAD_MODEL),
        ],
        [
            route_entity("bench", ["127.0.0.1"], ["bench-openai"]),
            route_entity("bench-slow", ["127.0.0.1/slow"], ["bench-slow"]),
            route_entity("bench-held", ["127.0.0.1/held"], ["bench-held"]),
            route_entity("bench-upload", ["127.0.0.1/upload"], ["bench-ct"], max_size_upload=200 * 2**20),
        ],
    )


def timed_load(pool: Any, spec: LoadSpec, pids: list[int]) -> tuple[dict[str, Any], float]:
    """A load run and the CPU seconds the `pids` used meanwhile."""
    before = cpu_seconds(pids)
    result = pool.submit(run_load, spec).result()
    return summary(result), cpu_seconds(pids) - before


def measure_litellm(fast: StandInProcess, counts: Counts, body: bytes, content_type: str) -> dict[str, Any]:
    log("LiteLLM proxy: starting")
    with litellm_proxy(fast.openai_url) as proxy, load_process() as pool:
        headers = {"Authorization": proxy.authorization}

        def spec(total: int, c: int) -> LoadSpec:
            return LoadSpec(proxy.port, PATH, body, content_type, total, c, headers=headers)

        pool.submit(run_load, spec(counts.warmup, 4)).result()
        data: dict[str, Any] = {}
        log(f"LiteLLM c=1: {counts.c1} direct then {counts.c1} proxied")
        data["c1_direct"] = summary(
            pool.submit(run_load, LoadSpec(fast.port, PATH, body, content_type, counts.c1, 1)).result()
        )
        data["c1"], _ = timed_load(pool, spec(counts.c1, 1), proxy.pids)
        log(f"LiteLLM c=16: {counts.c16} direct then {counts.c16} proxied")
        data["c16_direct"] = summary(
            pool.submit(run_load, LoadSpec(fast.port, PATH, body, content_type, counts.c16, 16)).result()
        )
        data["c16"], cpu = timed_load(pool, spec(counts.c16, 16), proxy.pids)
        data["cpu_ms_per_edit"] = round(cpu * 1000 / counts.c16, 2)
        data["errors_in_log"] = sum(
            " ERROR " in line for line in proxy.log_path.read_text(errors="replace").splitlines()
        )
    return data


def probe(port: int, path: str, body: bytes | None, content_type: str, timeout: float) -> float | None:
    """One request on a fresh connection: seconds to a 200, or None."""
    began = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        if body is None:
            conn.request("GET", path)
        else:
            conn.request("POST", path, body, {"Content-Type": content_type, "Authorization": f"Bearer {API_KEY}"})
        response = conn.getresponse()
        response.read()
        conn.close()
    except (OSError, http.client.HTTPException):
        return None
    return time.perf_counter() - began if response.status == 200 else None


def measure_gateway(server: str, counts: Counts, stands: tuple[StandInProcess, ...], body: bytes, content_type: str,
                    big: tuple[bytes, str]) -> dict[str, Any]:  # fmt: skip
    fast, slow, held = stands
    data: dict[str, Any] = {"server": server}
    small, small_type = edit_body(noise_png(10_000))
    with gateway(seed(fast, slow, held), server=server) as gw, load_process() as pool, load_process() as pool2:

        def spec(port: int, total: int, c: int, path: str = PATH) -> LoadSpec:
            return LoadSpec(port, path, body, content_type, total, c)

        pool.submit(run_load, spec(gw.port, counts.warmup, 4)).result()
        pool.submit(run_load, spec(fast.port, counts.warmup, 4)).result()
        data["idle_rss_mb"] = round(rss_mb(gw.pids), 1)
        data["processes"] = len(gw.pids)

        log(f"[{server}] c=1: {counts.c1} direct then {counts.c1} through the gateway")
        data["c1_direct"] = summary(pool.submit(run_load, spec(fast.port, counts.c1, 1)).result())
        data["c1"], _ = timed_load(pool, spec(gw.port, counts.c1, 1), gw.pids)
        log(f"[{server}] c=16: {counts.c16} direct then {counts.c16} through the gateway")
        data["c16_direct"] = summary(pool.submit(run_load, spec(fast.port, counts.c16, 16)).result())
        busy = machine_busy_seconds()
        data["c16"], cpu = timed_load(pool, spec(gw.port, counts.c16, 16), gw.pids)
        data["cpu_ms_per_edit"] = round(cpu * 1000 / counts.c16, 2)
        data["c16_machine_busy_s"] = round(machine_busy_seconds() - busy, 1)

        log(f"[{server}] upload: {len(big[0]) / 1e6:.0f} MB, {counts.uploads} times direct then through the gateway")
        direct_times, gateway_times, statuses, growth = [], [], [], 0.0
        for _ in range(counts.uploads):  # one sample moved 2-4x from run to run: the median of a few
            direct_times.append(upload_post(fast.port, *big)[1])
            time.sleep(1)
            idle = rss_mb(gw.pids)
            with RssSampler(gw.pids, 0.02) as sampler:
                status, gateway_s, _ = _upload_via(gw.port, *big)
            statuses.append(status)
            gateway_times.append(gateway_s)
            growth = max(growth, sampler.peak - idle)
        data["upload"] = {
            "status": max(statuses),
            "direct_s": round(statistics.median(direct_times), 3),
            "gateway_s": round(statistics.median(gateway_times), 3),
            "direct_all_s": [round(t, 3) for t in direct_times],
            "gateway_all_s": [round(t, 3) for t in gateway_times],
            "rss_growth_mb": round(growth, 1),
            "mb": round(len(big[0]) / 1e6, 1),
        }

        log(f"[{server}] {counts.held_slow} edits held {counts.hold_s:g} s + a fast route at 20/s")
        fast_total = int(20 * counts.fast_s)
        fast_spec = LoadSpec(gw.port, PATH, body, content_type, fast_total, 4, 60.0, pace=0.2)
        with RssSampler(gw.pids, 0.1) as sampler:
            slow_future = pool2.submit(connections.held_edits, gw.port, "/slow" + PATH, body, content_type,
                                       counts.held_slow, 120.0)  # fmt: skip
            time.sleep(0.2)
            fast_result = summary(pool.submit(run_load, fast_spec).result())
            slow_result = slow_future.result()
        data["held512"] = {"slow": slow_result, "fast": fast_result, "rss_peak_mb": round(sampler.peak, 1),
                           "provider_max_in_flight": slow.stats()["max_in_flight"]}  # fmt: skip

        log(f"[{server}] {counts.many} edits (10 KB) held {counts.many_hold_s:g} s at once")
        idle = rss_mb(gw.pids)
        with RssSampler(gw.pids, 0.1) as sampler:
            many = pool2.submit(connections.held_edits, gw.port, "/held" + PATH, small, small_type, counts.many,
                                counts.many_hold_s * 4 + 60).result()  # fmt: skip
        data["held_many"] = {**many, "rss_idle_mb": round(idle, 1), "rss_peak_mb": round(sampler.peak, 1),
                             "provider_max_in_flight": held.stats()["max_in_flight"],
                             "threads_peak": sum(sampler.peak_threads.values())}  # fmt: skip

        n = counts.slow_clients
        log(f"[{server}] {n} slow or idle connections, then /healthz and a fast edit")
        slow_future = pool2.submit(connections.slow_clients, gw.port, n // 2, n - n // 2, counts.slow_hold_s)
        time.sleep(min(5.0, counts.slow_hold_s / 3))
        healthz, edits = [], []
        with concurrent.futures.ThreadPoolExecutor(2) as probes:
            for _ in range(5):
                h = probes.submit(probe, gw.port, "/healthz", None, "", 5.0)
                e = probes.submit(probe, gw.port, PATH, small, small_type, 5.0)
                healthz.append(h.result())
                edits.append(e.result())
                time.sleep(0.5)
        data["slow_clients"] = {
            **slow_future.result(),
            "healthz_ok": sum(v is not None for v in healthz),
            "edit_ok": sum(v is not None for v in edits),
            "healthz_max_ms": _max_ms(healthz),
            "edit_max_ms": _max_ms(edits),
        }
        data["log_problems"] = gw.log_problems()
    return data


def _upload_via(port: int, body: bytes, content_type: str) -> tuple[int, float, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300, blocksize=1024 * 1024)
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {API_KEY}"}
    began = time.perf_counter()
    conn.request("POST", "/upload" + PATH, body=body, headers=headers)
    response = conn.getresponse()
    answer = response.read()
    took = time.perf_counter() - began
    conn.close()
    return response.status, took, answer


def _max_ms(values: list[float | None]) -> float | None:
    done = [v for v in values if v is not None]
    return round(max(done) * 1000, 1) if done else None


# --- the table --------------------------------------------------------------------------------


def _overhead(side: dict[str, Any], direct: dict[str, Any]) -> float:
    return float(side["p50_ms"] - direct["p50_ms"])


def _rps_ratio(side: dict[str, Any], direct: dict[str, Any]) -> float:
    return float(side["rps"] / direct["rps"])


def table(run: dict[str, Any]) -> str:
    lite = run.get("litellm")
    headers = ["figure", *[g["server"] for g in run["gateways"]], "LiteLLM" if lite else "", "goal"]
    rows: list[list[str]] = []

    def row(name: str, per_gateway: list[str], litellm: str, goal: str) -> None:
        rows.append([name, *per_gateway, litellm if lite else "", goal])

    gws = run["gateways"]
    lite_over = _overhead(lite["c1"], lite["c1_direct"]) if lite else None
    row("overhead p50 at c=1 (gateway - direct)",
        [f"{_overhead(g['c1'], g['c1_direct']):.2f} ms" for g in gws],
        f"{lite_over:.2f} ms" if lite else "", "<= 0.15x LiteLLM's")  # fmt: skip
    row("CPU per 100 KB edit, all processes", [f"{g['cpu_ms_per_edit']:.2f} ms" for g in gws],
        f"{lite['cpu_ms_per_edit']:.2f} ms" if lite else "", "<= 0.15x LiteLLM's")  # fmt: skip
    row("req/s at c=16 / direct", [f"{_rps_ratio(g['c16'], g['c16_direct']):.2f}" for g in gws],
        f"{_rps_ratio(lite['c16'], lite['c16_direct']):.2f}" if lite else "", ">= 0.35")  # fmt: skip
    row("  (gateway req/s, direct req/s)", [f"{g['c16']['rps']:.0f}, {g['c16_direct']['rps']:.0f}" for g in gws],
        f"{lite['c16']['rps']:.0f}, {lite['c16_direct']['rps']:.0f}" if lite else "", "")  # fmt: skip
    row(f"{gws[0]['upload']['mb']:g} MB upload: median time / direct",
        [f"{g['upload']['gateway_s'] / g['upload']['direct_s']:.1f}x (HTTP {g['upload']['status']})" for g in gws],
        "-", "<= 2x")  # fmt: skip
    row("  RSS growth during the upload", [f"{g['upload']['rss_growth_mb']:.1f} MB" for g in gws], "-", "<= 32 MB")
    row(f"{gws[0]['held512']['slow']['sent']} held edits: errors, fast route p99",
        [f"{g['held512']['slow']['errors']} errors, p99 {g['held512']['fast']['p99_ms']:.0f} ms"
         f" ({g['held512']['fast']['errors']} fast errors)" for g in gws],
        "-", "0 errors, p99 < 200 ms")  # fmt: skip
    row(f"{gws[0]['held_many']['sent']} edits held at once: errors, held at the provider",
        [f"{g['held_many']['errors']} errors, {g['held_many']['provider_max_in_flight']} at once" for g in gws],
        "-", "0 errors, all at once")  # fmt: skip
    row("  RSS per edit held at the provider",
        [f"{(h['rss_peak_mb'] - h['rss_idle_mb']) * 1024 / max(1, h['provider_max_in_flight']):.0f} KB"
         for h in (g["held_many"] for g in gws)], "-", "")  # fmt: skip
    row("  RSS peak (idle), threads peak",
        [f"{h['rss_peak_mb']:.0f} ({h['rss_idle_mb']:.0f}) MB, {h['threads_peak']}"
         for h in (g["held_many"] for g in gws)], "-", "< 1 GB")  # fmt: skip
    row(
        f"{gws[0]['slow_clients']['attempted']} slow/idle connections: /healthz, fast edit answered",
        [f"{g['slow_clients']['healthz_ok']}/5, {g['slow_clients']['edit_ok']}/5" for g in gws],
        "-",
        "5/5, 5/5",
    )
    row(
        "  worst /healthz, worst fast edit",
        [f"{g['slow_clients']['healthz_max_ms']} ms, {g['slow_clients']['edit_max_ms']} ms" for g in gws],
        "-",
        "",
    )
    row(
        "  slow connections opened / closed by the server",
        [f"{g['slow_clients']['opened']} / {g['slow_clients']['closed_by_server']}" for g in gws],
        "-",
        "",
    )
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=SERVERS, default="gunicorn", help="the serving stack measured")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, help="several stacks, one after the other")
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM's proxy")
    parser.add_argument("--quick", action="store_true", help="tiny counts: checks the set-up, not the figures")
    parser.add_argument("--json", type=Path, help="also write the whole run as JSON here")
    parser.add_argument("--set", nargs="*", default=[], metavar="COUNT=N", help="override a count, e.g. many=1024")
    args = parser.parse_args()
    # A timeout's SIGTERM unwinds like Ctrl-C, so every server this run started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    counts = Counts(args.quick)
    for item in args.set:
        name, _, value = item.partition("=")
        setattr(counts, name, type(getattr(counts, name))(value))
    began = time.monotonic()
    code = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    run: dict[str, Any] = {"code": code.stdout.strip(), "cpus": os.cpu_count(), "loadavg_before": loadavg()}
    body, content_type = edit_body(noise_png(100_000))
    log(f"100 KB edit body: {len(body)} bytes; generating the {counts.upload_mb} MB upload")
    big = edit_body(noise_png(counts.upload_mb * 1_000_000), model=UPLOAD_MODEL)
    with StandInProcess() as fast, StandInProcess(hold=counts.hold_s) as slow, \
            StandInProcess(hold=counts.many_hold_s) as held:  # fmt: skip
        if not args.no_litellm:  # first: a run cut short still has what the goals are relative to
            run["litellm"] = measure_litellm(fast, counts, body, content_type)
        run["gateways"] = []
        for server in args.servers or [args.server]:
            began_server = time.monotonic()
            run["gateways"].append(measure_gateway(server, counts, (fast, slow, held), body, content_type, big))
            run["gateways"][-1]["wall_s"] = round(time.monotonic() - began_server, 1)
            run["gateways"][-1]["loadavg_after"] = loadavg()
            print(table(run), flush=True)  # so far, in case the run is cut short
            if args.json:
                args.json.write_text(json.dumps(run, indent=2, default=str))
    run["loadavg_after"] = loadavg()
    run["wall_s"] = round(time.monotonic() - began, 1)
    text = table(run)
    print(f"\nServing table, code {run['code']}, {run['cpus']} CPUs, load average before {run['loadavg_before']}, "
          f"after {run['loadavg_after']}, {run['wall_s']} s\n")  # fmt: skip
    print(text)
    if args.json:
        args.json.write_text(json.dumps(run, indent=2, default=str))
    print("\n" + json.dumps(run, indent=2, default=str))


if __name__ == "__main__":
    main()
