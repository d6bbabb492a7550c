"""512 edits in flight at once, each held 5 s by the provider, on one route; meanwhile a second route
whose provider answers at once serves paced fast edits. Errors on the slow route, latency of the fast.

    .venv/bin/python -m bench.slow_upstream [--slow 512] [--hold 5] [--fast 200] [--fast-span 7]

The fast requests (4 threads) are spread over `--fast-span` seconds from the moment the slow ones
are sent, so they see the 512 uploads arriving, the 5 s hold and the 512 answers leaving.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.common import (
    LoadSpec,
    Row,
    RssSampler,
    StandInProcess,
    edit_body,
    entities,
    fmt,
    gateway,
    image_model_entity,
    load_process,
    log,
    noise_png,
    report,
    route_entity,
    rss_mb,
    run_load,
    summary,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=512, help="slow edits sent at once")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds the slow provider holds each")
    parser.add_argument("--fast", type=int, default=200, help="fast edits, 4 at a time")
    parser.add_argument("--fast-span", type=float, default=7.0, help="seconds the fast edits are spread over")
    parser.add_argument("--kb", type=int, default=100, help="PNG size of every edit")
    args = parser.parse_args()

    body, content_type = edit_body(noise_png(args.kb * 1000))
    with StandInProcess(hold=args.hold) as slow, StandInProcess() as fast:
        seed = entities(
            [image_model_entity("bench-slow", slow.openai_url), image_model_entity("bench-fast", fast.openai_url)],
            [
                route_entity("bench-slow", ["127.0.0.1/slow"], ["bench-slow"]),
                route_entity("bench-fast", ["127.0.0.1/fast"], ["bench-fast"]),
            ],
        )
        with gateway(seed) as gw, load_process() as slow_pool, load_process() as fast_pool:
            warm = LoadSpec(gw.port, "/fast/v1/images/edits", body, content_type, 50, 4)
            fast_pool.submit(run_load, warm).result()
            idle = rss_mb(gw.pids)
            slow_spec = LoadSpec(gw.port, "/slow/v1/images/edits", body, content_type, args.slow, args.slow, 120.0)
            pace = args.fast_span / (args.fast / 4)
            fast_spec = LoadSpec(gw.port, "/fast/v1/images/edits", body, content_type, args.fast, 4, 60.0, pace=pace)
            log(f"{args.slow} slow edits (held {args.hold:g} s) and {args.fast} paced fast edits")
            began = time.monotonic()
            with RssSampler(gw.worker_pids, 0.1) as sampler:
                slow_future = slow_pool.submit(run_load, slow_spec)
                fast_result = fast_pool.submit(run_load, fast_spec).result()
                slow_result = slow_future.result()
            data: dict[str, Any] = {
                "slow": summary(slow_result),
                "fast": summary(fast_result),
                "wall_s": round(time.monotonic() - began, 2),
                "slow_provider_max_in_flight": slow.stats()["max_in_flight"],
                "worker_threads_peak": list(sampler.peak_threads.values()),
                "idle_rss_mb": round(idle, 1),
                "rss_after_mb": round(rss_mb(gw.pids), 1),
                "gateway_log_problems": gw.log_problems(),
            }
    report("Slow upstream: 512 held edits and a fast route", rows(data), data)


def rows(data: dict[str, Any]) -> list[Row]:
    slow, fast = data["slow"], data["fast"]
    return [
        Row("slow route: edits sent", str(slow["requests"])),
        Row("slow route: errors", str(slow["errors"]), "0", slow["errors"] == 0),
        Row("slow route: held at once by the provider", str(data["slow_provider_max_in_flight"])),
        Row(
            "slow route: p50 / p99 / max",
            f"{slow['p50_ms'] / 1000:.2f} / {slow['p99_ms'] / 1000:.2f} / {slow['max_ms'] / 1000:.2f} s",
        ),
        Row("fast route: errors", str(fast["errors"]), "0", fast["errors"] == 0),
        Row("fast route: p50 / p90", f"{fast['p50_ms']:.1f} / {fast['p90_ms']:.1f} ms"),
        Row("fast route: p99", fmt(fast["p99_ms"], " ms", 1), "< 200 ms", fast["p99_ms"] < 200),
        Row("fast route: max", fmt(fast["max_ms"], " ms", 1)),
        Row("threads per worker, peak", " / ".join(str(n) for n in data["worker_threads_peak"])),
        Row("gateway RSS idle / after", f"{data['idle_rss_mb']:.0f} / {data['rss_after_mb']:.0f} MB"),
        Row("gateway log warnings+errors", str(data["gateway_log_problems"]["count"])),
    ]


if __name__ == "__main__":
    main()
