"""CPU per edit when the provider answers a real-sized image: every proxy on the way reads the
answer's JSON and writes it again, and an image's b64_json is megabytes, not the serving table's
few hundred bytes. The gateway (each of `--servers`) beside LiteLLM's proxy, on one stand-in whose
answer carries a PNG of `--answer-kb` KB, 100 KB PNG edits at c=16, in rounds whose order rotates.

    .venv/bin/python -m bench.answer [--answer-kb 1500] [--servers gunicorn-before gunicorn] [--no-litellm]

Bounded counts, loopback only, everything stopped by PID (as bench.all).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import statistics
from typing import Any

from bench.common import (
    API_KEY,
    SERVERS,
    LoadSpec,
    Row,
    StandInProcess,
    cpu_seconds,
    edit_body,
    entities,
    gateway,
    image_model_entity,
    load_process,
    log,
    noise_png,
    report,
    route_entity,
    run_load,
    summary,
)
from bench.litellm import litellm_proxy

PATH = "/v1/images/edits"


def answer_bytes(port: int, body: bytes, content_type: str, headers: dict[str, str]) -> tuple[int, int]:
    """One edit: its status and the size of its answer (the image must come back whole)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", PATH, body=body, headers={"Content-Type": content_type, **headers})
    response = conn.getresponse()
    size = len(response.read())
    conn.close()
    return response.status, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answer-kb", type=int, default=1500, help="KB of the answer's PNG (before base64)")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=["gunicorn"])
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--edits", type=int, default=300, help="edits per measurement, at c=16")
    args = parser.parse_args()

    body, content_type = edit_body(noise_png(100_000))
    per: dict[str, list[dict[str, Any]]] = {}
    with contextlib.ExitStack() as stack:
        standin = stack.enter_context(StandInProcess(answer_kb=args.answer_kb))
        seed = entities(
            [image_model_entity("bench-openai", standin.openai_url)],
            [route_entity("bench", ["127.0.0.1"], ["bench-openai"])],
        )
        targets: list[tuple[str, int, Any, dict[str, str]]] = []
        for server in args.servers:
            gw = stack.enter_context(gateway(seed, server=server))
            targets.append((server, gw.port, gw, {"Authorization": f"Bearer {API_KEY}"}))
        if not args.no_litellm:
            proxy = stack.enter_context(litellm_proxy(standin.openai_url))
            targets.append(("LiteLLM", proxy.port, proxy, {"Authorization": proxy.authorization}))
        pool = stack.enter_context(load_process())
        sizes = {}
        for name, port, _, headers in targets:
            status, size = answer_bytes(port, body, content_type, headers)
            if status != 200:
                raise SystemExit(f"{name}: an edit answered HTTP {status}")
            sizes[name] = size
            pool.submit(run_load, LoadSpec(port, PATH, body, content_type, 30, 4, headers=headers)).result()
            per[name] = []
        for n in range(args.rounds):
            for name, port, server, headers in targets[n % len(targets) :] + targets[: n % len(targets)]:
                log(f"[{name}] round {n + 1}/{args.rounds}: {args.edits} edits at c=16, {args.answer_kb} KB answers")
                before = cpu_seconds(server.pids)
                result = summary(pool.submit(run_load, LoadSpec(port, PATH, body, content_type, args.edits, 16,
                                                                headers=headers)).result())  # fmt: skip
                cpu = cpu_seconds(server.pids) - before
                per[name].append({"cpu_ms_per_edit": round(cpu * 1000 / args.edits, 2), "rps": result["rps"],
                                  "errors": result["errors"], "statuses": result["statuses"]})  # fmt: skip

    rows, data = [], {"answer_kb": args.answer_kb, "answer_bytes": sizes, "rounds": per}
    litellm = statistics.median(r["cpu_ms_per_edit"] for r in per["LiteLLM"]) if "LiteLLM" in per else None
    for name, rounds in per.items():
        cpus = [r["cpu_ms_per_edit"] for r in rounds]
        median = statistics.median(cpus)
        ratio = f", {median / litellm:.3f}x LiteLLM's" if litellm and name != "LiteLLM" else ""
        errors = sum(r["errors"] for r in rounds)
        rows.append(Row(f"{name}: CPU per edit, {args.answer_kb} KB answer (median, range)",
                        f"{median:.2f} ms ({min(cpus):.2f}-{max(cpus):.2f}){ratio}"))  # fmt: skip
        rows.append(Row(f"{name}: req/s at c=16 (median), errors, answer size",
                        f"{statistics.median(r['rps'] for r in rounds):.0f}, {errors}, {sizes[name]:,} B",
                        "0 errors", errors == 0))  # fmt: skip
    report(f"A {args.answer_kb} KB image in every answer, c=16", rows, data)


if __name__ == "__main__":
    main()
