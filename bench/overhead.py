"""Gateway overhead on 100 KB PNG edits: latency and throughput at concurrency 1 and 16, gateway vs
the stand-in called directly (back to back, same run), CPU per request of all gateway processes,
idle memory and time to ready.

    .venv/bin/python -m bench.overhead [--c1 300] [--c16 2000] [--profile]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import (
    BIN,
    ROOT,
    LoadSpec,
    Row,
    StandInProcess,
    cpu_seconds,
    edit_body,
    entities,
    fmt,
    gateway,
    image_model_entity,
    load_process,
    log,
    machine_busy_seconds,
    noise_png,
    pss_mb,
    report,
    route_entity,
    rss_mb,
    run_load,
    summary,
)

PATH = "/v1/images/edits"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c1", type=int, default=300, help="requests at concurrency 1")
    parser.add_argument("--c16", type=int, default=2000, help="requests at concurrency 16")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="then profile the gateway with py-spy at c=16")
    args = parser.parse_args()

    body, content_type = edit_body(noise_png(100_000))
    log(f"edit body: {len(body)} bytes")
    data: dict[str, Any] = {"body_bytes": len(body)}
    with StandInProcess() as standin:
        seed = entities([image_model_entity("bench-openai", standin.openai_url)], [
            route_entity("bench", ["127.0.0.1"], ["bench-openai"])
        ])  # fmt: skip
        with gateway(seed) as gw, load_process() as pool:
            data["ready_s"] = round(gw.ready_s, 3)
            data["idle_cold"] = {"rss_mb": round(rss_mb(gw.pids), 1), "pss_mb": round(pss_mb(gw.pids), 1)}
            data["processes"] = len(gw.pids)

            def spec(port: int, total: int, concurrency: int) -> LoadSpec:
                return LoadSpec(port, PATH, body, content_type, total, concurrency)

            log("warm-up")
            pool.submit(run_load, spec(gw.port, args.warmup, 4)).result()
            pool.submit(run_load, spec(standin.port, args.warmup, 4)).result()
            data["idle_warm"] = {"rss_mb": round(rss_mb(gw.pids), 1), "pss_mb": round(pss_mb(gw.pids), 1)}

            for concurrency, total in ((1, args.c1), (16, args.c16)):
                log(f"c={concurrency}: {total} direct, then {total} through the gateway")
                direct = pool.submit(run_load, spec(standin.port, total, concurrency)).result()
                pids = gw.pids
                before = counters(pids, standin.pid)
                through = pool.submit(run_load, spec(gw.port, total, concurrency)).result()
                cpu, standin_cpu, busy = (
                    now - then for now, then in zip(counters(pids, standin.pid), before, strict=True)
                )
                data[f"c{concurrency}"] = {
                    "direct": summary(direct),
                    "gateway": summary(through),
                    "gateway_cpu_ms_per_req": round(cpu * 1000 / total, 3),
                    "standin_cpu_ms_per_req": round(standin_cpu * 1000 / total, 3),
                    # All cores' busy time during the gateway run, and what none of ours used (other load).
                    "machine_busy_pct": round(100 * busy / (through.elapsed * (os.cpu_count() or 1)), 1),
                    "other_processes_cpu_s": round(busy - cpu - standin_cpu - through.client_cpu, 2),
                }
            data["idle_after"] = {"rss_mb": round(rss_mb(gw.pids), 1), "pss_mb": round(pss_mb(gw.pids), 1)}
            if args.profile:
                data["profile"] = profile(gw.proc.pid, lambda: pool.submit(
                    run_load, spec(gw.port, args.c16, 16)).result())  # fmt: skip

    report("Gateway overhead, 100 KB PNG edits", rows(data), data, hotspot_text(data.get("profile")))


def hotspot_text(profile: dict[str, Any] | None, top: int = 12) -> str:
    if not profile or "samples" not in profile:
        return ""
    lines = [f"py-spy, samples holding the GIL ({profile['samples']}), c=16; raw stacks: {profile['file']}"]
    for title, key in (("self", "self"), ("inclusive, project code", "inclusive_project_code")):
        lines.append(f"  {title}:")
        lines += [f"    {e['percent']:5.1f}%  {e['function']}" for e in profile[key][:top]]
    return "\n".join(lines)


def counters(gateway_pids: list[int], standin_pid: int) -> tuple[float, float, float]:
    """CPU seconds so far: the gateway's processes, the stand-in's, and all cores' busy time."""
    return cpu_seconds(gateway_pids), cpu_seconds([standin_pid]), machine_busy_seconds()


def rows(data: dict[str, Any]) -> list[Row]:
    c1, c16 = data["c1"], data["c16"]
    p50 = c1["gateway"]["p50_ms"] - c1["direct"]["p50_ms"]
    p99 = c1["gateway"]["p99_ms"] - c1["direct"]["p99_ms"]
    ratio = c16["gateway"]["rps"] / c16["direct"]["rps"]
    cpu, cpu1 = c16["gateway_cpu_ms_per_req"], c1["gateway_cpu_ms_per_req"]
    idle = data["idle_warm"]["rss_mb"]
    out = []
    for name in ("c1", "c16"):
        for side in ("direct", "gateway"):
            s = data[name][side]
            figures = f"p50 {s['p50_ms']:.2f} / p90 {s['p90_ms']:.2f} / p99 {s['p99_ms']:.2f} ms"
            out.append(Row(f"{name} {side} latency", figures))
            out.append(Row(f"{name} {side} requests/s", f"{s['rps']:.0f} ({s['errors']} errors)"))
    return [
        *out,
        Row("c1 overhead p50 (gateway - direct)", fmt(p50, " ms"), "<= 3.5 ms", p50 <= 3.5),
        Row("c1 overhead p99 (gateway - direct)", fmt(p99, " ms"), "<= 8 ms", p99 <= 8),
        Row("c16 throughput gateway / direct", fmt(ratio), ">= 0.35", ratio >= 0.35),
        Row("gateway CPU per edit, c=1", fmt(cpu1, " ms"), "<= 2.5 ms", cpu1 <= 2.5),
        Row("gateway CPU per edit, c=16", fmt(cpu, " ms"), "<= 2.5 ms", cpu <= 2.5),
        Row("idle RSS, cold (sum master+workers)", fmt(data["idle_cold"]["rss_mb"], " MB", 1)),
        Row("idle RSS, warm (sum master+workers)", fmt(idle, " MB", 1), "<= 200 MB", idle <= 200),
        Row("idle PSS, warm (sum)", fmt(data["idle_warm"]["pss_mb"], " MB", 1)),
        Row("idle RSS after the runs", fmt(data["idle_after"]["rss_mb"], " MB", 1)),
        Row(
            "c16 machine busy / CPU of other processes",
            f"{c16['machine_busy_pct']}% / {c16['other_processes_cpu_s']} s",
        ),
        Row("start to /healthz 200", fmt(data["ready_s"], " s"), "<= 3 s", data["ready_s"] <= 3),
    ]


def profile(master: int, load: Any) -> dict[str, Any]:
    """py-spy over master and workers (not installed by this script) while `load` runs."""
    py_spy = shutil.which("py-spy") or str(BIN / "py-spy")
    if not Path(py_spy).exists():
        log("py-spy not found: `.venv/bin/pip install py-spy` to profile; skipped")
        return {"skipped": "py-spy not installed"}
    raw = Path(tempfile.gettempdir()) / "gateway-bench-profile.txt"
    command = [py_spy, "record", "--pid", str(master), "--subprocesses", "--nonblocking", "--gil",
               "--rate", "250", "--format", "raw", "--output", str(raw)]  # fmt: skip
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log("profiling one more c=16 run with py-spy")
        load()
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    if not raw.exists():
        return {"skipped": "py-spy wrote no profile (ptrace not permitted?)"}
    return hotspots(raw)


def hotspots(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": f, "percent": round(100 * n / total, 1)} for f, n in counter.most_common(top)]

    project = Counter({f: n for f, n in inclusive.items() if f.split("(")[-1].startswith(PROJECT_DIRS)})
    return {
        "samples": total,
        "file": str(path),
        "self": share(own),
        "inclusive_project_code": share(project),
        "inclusive": share(inclusive),
    }


PROJECT_DIRS = ("edits_api/", "entities/", "gateway_project/")
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>.*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    """`name (file)` without the line number, the file relative to the project or site-packages."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    file = match["file"].removeprefix(str(ROOT) + "/")
    if "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    elif "/lib/python3" in file:
        file = "stdlib/" + file.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return f"{match['name']} ({file})"


if __name__ == "__main__":
    main()
