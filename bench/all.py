"""Every figure of the serving table in one run: the gateway beside LiteLLM's proxy and beside the
stand-in provider called directly, on the same stand-ins, back to back.

    .venv/bin/python -m bench.all [--server gunicorn] [--servers gunicorn granian-wsgi uvicorn-asgi]
                                  [--no-litellm] [--quick]

Figures: overhead p50 at c=1, CPU per 100 KB edit (all processes of the server), req/s at c=16 over
direct, 100 MB upload time over direct and RSS growth, 512 edits held 5 s with a fast route at
20/s beside them, 4,096 edits held at once, 5,000 slow or idle connections with /healthz and a
fast edit still answered. `--servers` measures several serving stacks in the same run (LiteLLM
once). Every count is bounded; everything runs on 127.0.0.1 and is stopped by PID.

The first three figures move 10-30% between runs on a shared 2-CPU machine, more than most changes
move them, so they are measured in `rounds` (3): every server (LiteLLM and each stack) is up at once,
and each round measures them one after the other, each beside its own direct call, in an order that
rotates. The table gives each figure's median over the rounds and the JSON every round.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import connections
from bench.common import (
    API_KEY,
    ROOT,
    SERVERS,
    Gateway,
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
from bench.litellm import LiteLLM, litellm_proxy
from bench.upload import MODEL as UPLOAD_MODEL
from bench.upload import post as upload_post

PATH = "/v1/images/edits"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Counts:
    def __init__(self, quick: bool) -> None:
        self.rounds = 1 if quick else 3  # of the c=1, c=16 and CPU figures, for every server
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


@dataclass
class Target:
    """A server measured in the speed rounds: LiteLLM's proxy or a serving stack of the gateway."""

    name: str
    port: int
    server: Gateway | LiteLLM  # whose `pids` are its processes now (a worker may have been replaced)
    headers: dict[str, str]


def speed_rounds(
    targets: list[Target], fast: StandInProcess, counts: Counts, body: bytes, content_type: str
) -> dict[str, dict[str, Any]]:
    """c=1 latency, c=16 rate and CPU per edit of every target, each beside the direct call measured
    just before it, in `counts.rounds` rounds whose order rotates; per target, each figure's median
    over the rounds and every round."""
    per: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    with load_process() as pool:

        def spec(port: int, total: int, c: int, headers: dict[str, str]) -> LoadSpec:
            return LoadSpec(port, PATH, body, content_type, total, c, headers=headers)

        for target in targets:
            pool.submit(run_load, spec(target.port, counts.warmup, 4, target.headers)).result()
        pool.submit(run_load, spec(fast.port, counts.warmup, 4, {})).result()
        direct = functools.partial(spec, fast.port, headers={})
        for n in range(counts.rounds):
            for target in targets[n % len(targets) :] + targets[: n % len(targets)]:
                through = functools.partial(spec, target.port, headers=target.headers)
                log(f"[{target.name}] round {n + 1}/{counts.rounds}: c=1 ({counts.c1}) and c=16 ({counts.c16}),"
                    " each direct then through it")  # fmt: skip
                one: dict[str, Any] = {"c1_direct": summary(pool.submit(run_load, direct(counts.c1, 1)).result())}
                one["c1"], _ = timed_load(pool, through(counts.c1, 1), target.server.pids)
                one["c16_direct"] = summary(pool.submit(run_load, direct(counts.c16, 16)).result())
                busy = machine_busy_seconds()
                one["c16"], cpu = timed_load(pool, through(counts.c16, 16), target.server.pids)
                one["c16_machine_busy_s"] = round(machine_busy_seconds() - busy, 1)
                one["overhead_ms"] = round(one["c1"]["p50_ms"] - one["c1_direct"]["p50_ms"], 2)
                one["cpu_ms_per_edit"] = round(cpu * 1000 / counts.c16, 2)
                one["c16_ratio"] = round(one["c16"]["rps"] / one["c16_direct"]["rps"], 3)
                per[target.name].append(one)
    return {name: _medians(rounds) for name, rounds in per.items()}


def _medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    figures = ("overhead_ms", "cpu_ms_per_edit", "c16_ratio")
    data: dict[str, Any] = {f: statistics.median(r[f] for r in rounds) for f in figures}
    data["range"] = {f: [min(r[f] for r in rounds), max(r[f] for r in rounds)] for f in figures}
    # The rates shown beside the ratio: the round whose ratio is the median (the upper one of two).
    middle = sorted(rounds, key=lambda r: r["c16_ratio"])[len(rounds) // 2]
    data["c16_rps"], data["c16_direct_rps"] = middle["c16"]["rps"], middle["c16_direct"]["rps"]
    data["rounds"] = rounds
    return data


def litellm_errors(proxy: LiteLLM) -> int:
    return sum(" ERROR " in line for line in proxy.log_path.read_text(errors="replace").splitlines())


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


def upload_rounds(gateways: list[Gateway], fast: StandInProcess, counts: Counts, big: tuple[bytes, str]
                  ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The large upload, `counts.uploads` rounds of a direct call then every gateway in turn (the
    first one a different gateway each round), before any held phase: measured one gateway after
    the other, the second one's uploads came after the first one's 4,096 held edits and took up to
    twice as long, whichever code it served."""
    log(f"upload: {len(big[0]) / 1e6:.0f} MB, {counts.uploads} rounds of a direct call then each gateway")
    direct_times: list[float] = []
    per: dict[str, dict[str, Any]] = {gw.server: {"times": [], "statuses": [], "growth": 0.0} for gw in gateways}
    for n in range(counts.uploads):  # one sample moved 2-4x from run to run: the median of a few
        direct_times.append(upload_post(fast.port, *big)[1])
        for gw in gateways[n % len(gateways) :] + gateways[: n % len(gateways)]:
            time.sleep(1)
            idle = rss_mb(gw.pids)
            with RssSampler(gw.pids, 0.02) as sampler:
                status, gateway_s, _ = _upload_via(gw.port, *big)
            one = per[gw.server]
            one["statuses"].append(status)
            one["times"].append(gateway_s)
            one["growth"] = max(one["growth"], sampler.peak - idle)
    return {
        server: {
            "status": max(one["statuses"]),
            "direct_s": round(statistics.median(direct_times), 3),
            "gateway_s": round(statistics.median(one["times"]), 3),
            "direct_all_s": [round(t, 3) for t in direct_times],
            "gateway_all_s": [round(t, 3) for t in one["times"]],
            "rss_growth_mb": round(one["growth"], 1),
            "mb": round(len(big[0]) / 1e6, 1),
        }
        for server, one in per.items()
    }


def measure_gateway(gw: Gateway, counts: Counts, stands: tuple[StandInProcess, ...], body: bytes, content_type: str
                    ) -> dict[str, Any]:  # fmt: skip
    """The figures after the speed rounds and the uploads, for one serving stack: held edits, slow clients."""
    slow, held = stands
    server = gw.server
    data: dict[str, Any] = {}
    small, small_type = edit_body(noise_png(10_000))
    with load_process() as pool, load_process() as pool2:
        log(f"[{server}] {counts.held_slow} edits held {counts.hold_s:g} s + a fast route at 20/s")
        fast_total = int(20 * counts.fast_s)
        fast_spec = LoadSpec(gw.port, PATH, body, content_type, fast_total, 4, 60.0, pace=0.2)
        slow.reset_peak()
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
        held.reset_peak()
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


def _spread(speed: dict[str, Any], figure: str, text: str) -> str:
    low, high = speed["range"][figure]
    return f"{text} ({low:g}-{high:g})" if len(speed["rounds"]) > 1 else text


def table(run: dict[str, Any]) -> str:
    lite = run.get("litellm")
    headers = ["figure", *[g["server"] for g in run["gateways"]], "LiteLLM" if lite else "", "goal"]
    rows: list[list[str]] = []

    def row(name: str, per_gateway: list[str], litellm: str, goal: str) -> None:
        rows.append([name, *per_gateway, litellm if lite else "", goal])

    gws = run["gateways"]
    speeds = [*(g["speed"] for g in gws), *([lite["speed"]] if lite else [])]
    rounds = len(speeds[0]["rounds"])
    medians = f", median of {rounds} rounds (range)" if rounds > 1 else ""

    def speed_row(name: str, figure: str, fmt: str, goal: str) -> None:
        texts = [_spread(s, figure, fmt.format(s[figure])) for s in speeds]
        row(name, texts[: len(gws)], texts[-1] if lite else "", goal)

    speed_row(f"overhead p50 at c=1 (gateway - direct){medians}", "overhead_ms", "{:.2f} ms", "<= 0.15x LiteLLM's")
    speed_row(f"CPU per 100 KB edit, all processes{medians}", "cpu_ms_per_edit", "{:.2f} ms", "<= 0.15x LiteLLM's")
    speed_row(f"req/s at c=16 / direct{medians}", "c16_ratio", "{:.2f}", ">= 0.35")
    texts = [f"{s['c16_rps']:.0f}, {s['c16_direct_rps']:.0f}" for s in speeds]
    row("  (gateway req/s, direct req/s) in the median round", texts[: len(gws)], texts[-1] if lite else "", "")
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
    servers = args.servers or [args.server]
    if len(set(servers)) < len(servers):
        parser.error("each server once: the speed rounds tell them apart by name")
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
    with contextlib.ExitStack() as stack:
        fast = stack.enter_context(StandInProcess())
        slow = stack.enter_context(StandInProcess(hold=counts.hold_s))
        held = stack.enter_context(StandInProcess(hold=counts.many_hold_s))
        # Every server is up at once, so that the speed rounds can alternate between them.
        gateways = [stack.enter_context(gateway(seed(fast, slow, held), server=s)) for s in servers]
        targets = [Target(gw.server, gw.port, gw, {}) for gw in gateways]
        proxy = None
        if not args.no_litellm:
            log("LiteLLM proxy: starting")
            proxy = stack.enter_context(litellm_proxy(fast.openai_url))
            targets.append(Target("LiteLLM", proxy.port, proxy, {"Authorization": proxy.authorization}))
        speed = speed_rounds(targets, fast, counts, body, content_type)
        if proxy is not None:
            run["litellm"] = {"speed": speed["LiteLLM"], "errors_in_log": litellm_errors(proxy)}
        uploads = upload_rounds(gateways, fast, counts, big)
        run["gateways"] = []
        for gw in gateways:
            began_server = time.monotonic()
            measured = {"server": gw.server, "idle_rss_mb": round(rss_mb(gw.pids), 1), "processes": len(gw.pids),
                        "speed": speed[gw.server], "upload": uploads[gw.server]}  # fmt: skip
            run["gateways"].append(measured)
            measured.update(measure_gateway(gw, counts, (slow, held), body, content_type))
            measured["wall_s"] = round(time.monotonic() - began_server, 1)
            measured["loadavg_after"] = loadavg()
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
