"""One large PNG edit through a route with a 200 MB max_size_upload: the gateway's peak RSS growth
over idle (all processes summed, sampled every 20 ms) and the time against uploading the same body
to the stand-in directly.

    .venv/bin/python -m bench.upload [--mb 100 48]

100 MB is the issue's case. OpenAI's gpt-image models take at most 50 MB per image, so the edit goes
to a Cloud Temple entity (same multipart protocol, no such cap) with its own model name.
"""

from __future__ import annotations

import argparse
import http.client
import time
from typing import Any

from bench.common import (
    API_KEY,
    Row,
    RssSampler,
    StandInProcess,
    edit_body,
    entities,
    fmt,
    gateway,
    image_model_entity,
    log,
    noise_png,
    report,
    route_entity,
    rss_mb,
)

PATH = "/v1/images/edits"


def post(port: int, body: bytes, content_type: str) -> tuple[int, float, bytes]:
    """One upload on a fresh connection: status, seconds, answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300, blocksize=1024 * 1024)
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {API_KEY}"}
    began = time.perf_counter()
    conn.request("POST", PATH, body=body, headers=headers)
    response = conn.getresponse()
    answer = response.read()
    took = time.perf_counter() - began
    conn.close()
    return response.status, took, answer


MODEL = "ct-image-edit"  # a Cloud Temple model name: OpenAI's protocol, the provider's own limits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, nargs="+", default=[100], help="PNG sizes in MB (10^6 bytes)")
    args = parser.parse_args()

    small, small_type = edit_body(noise_png(10_000), model=MODEL)
    data: dict[str, Any] = {"runs": []}
    with StandInProcess() as standin:
        seed = entities([image_model_entity("bench-ct", standin.openai_url, "cloud-temple", MODEL)], [
            route_entity("bench-upload", ["127.0.0.1"], ["bench-ct"], max_size_upload=200 * 2**20)
        ])  # fmt: skip
        with gateway(seed) as gw:
            for _ in range(20):  # warm: lazy imports and first allocations are not the upload's
                post(gw.port, small, small_type)
            for mb in args.mb:
                log(f"generating a {mb:g} MB noise PNG")
                body, content_type = edit_body(noise_png(int(mb * 1_000_000)), model=MODEL)
                direct_status, direct_s, _ = post(standin.port, body, content_type)
                time.sleep(1)  # let the workers settle before taking the idle figure
                idle = rss_mb(gw.pids)
                forwarded_before = standin.stats()["body_bytes"]
                log(f"{len(body) / 1e6:.1f} MB body: direct {direct_s:.2f} s, now through the gateway")
                with RssSampler(gw.pids, 0.02) as sampler:
                    status, gateway_s, answer = post(gw.port, body, content_type)
                data["runs"].append(
                    {
                        "body_mb": round(len(body) / 1e6, 1),
                        "gateway_status": status,
                        "gateway_answer": answer[:300].decode(errors="replace") if status != 200 else "200 OK",
                        "gateway_s": round(gateway_s, 3),
                        "direct_status": direct_status,
                        "direct_s": round(direct_s, 3),
                        "forwarded_mb": round((standin.stats()["body_bytes"] - forwarded_before) / 1e6, 1),
                        "idle_rss_mb": round(idle, 1),
                        "peak_rss_mb": round(sampler.peak, 1),
                        "rss_growth_mb": round(sampler.peak - idle, 1),
                        "rss_samples": sampler.samples,
                    }
                )
    report("Large upload, 200 MB route limit", rows(data["runs"]), data)


def rows(runs: list[dict[str, Any]]) -> list[Row]:
    out = []
    for run in runs:
        size = f"{run['body_mb']:g} MB"
        growth = run["rss_growth_mb"]
        out += [
            Row(f"{size}: gateway answer", f"HTTP {run['gateway_status']}", "200", run["gateway_status"] == 200),
            Row(f"{size}: forwarded to provider", f"{run['forwarded_mb']:g} MB"),
            Row(f"{size}: RSS growth over idle", fmt(growth, " MB", 1), "<= 32 MB", growth <= 32),
            Row(f"{size}: time gateway / direct", f"{run['gateway_s']:.2f} s / {run['direct_s']:.2f} s"),
        ]
    return out


if __name__ == "__main__":
    main()
