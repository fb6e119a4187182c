"""API latency with 300 pipelines defined: p50/p99 of GET /pipelines and GET /pipelines/{name}.

Starts the real service (tests/support/service.Service) with an empty config, creates the
pipelines through POST /pipelines (they point at an unreachable MySQL, so they are `failed`
and retrying, which keeps the workers busy), times sequential requests, then stops them all
with one bulk call and times the same requests again (API cost without CPU contention).

    python3 benchmarks/api_latency.py [--pipelines 300] [--requests 500] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.pipelines import pipeline_yaml  # noqa: E402
from tests.support.service import Service, free_port  # noqa: E402


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def timed(service: Service, path: str) -> float:
    started = time.perf_counter()
    response = service.api.get(path)
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.text
    return elapsed_ms


def summary(name: str, samples: list[float]) -> dict[str, Any]:
    return {"endpoint": name, "requests": len(samples),
            "p50_ms": round(percentile(samples, 50), 2),
            "p99_ms": round(percentile(samples, 99), 2),
            "max_ms": round(max(samples), 2), "mean_ms": round(statistics.fmean(samples), 2)}


def measure(service: Service, names: list[str], requests: int, phase: str
            ) -> list[dict[str, Any]]:
    """The three reads, ``requests`` times each, while the pipelines are in ``phase``."""
    for _ in range(20):  # warm-up
        timed(service, "/pipelines")
    paths = {"GET /pipelines": lambda: "/pipelines",
             "GET /pipelines/{name}": lambda: f"/pipelines/{random.choice(names)}",
             "GET /pipelines?label=team:t3": lambda: "/pipelines?label=team:t3"}
    return [summary(f"{name} [{phase}]", [timed(service, path()) for _ in range(requests)])
            for name, path in paths.items()]


def create_pipelines(service: Service, count: int) -> tuple[list[str], list[float]]:
    port = free_port()
    names, create_ms = [], []
    for index in range(count):
        name = f"bench-{index:04d}"
        doc = pipeline_yaml(name, f"mysql://u:pw@127.0.0.1:{port}/", f"127.0.0.1:{port}",
                            ["db.t"], "t")
        doc["metadata"]["labels"] = {"team": f"t{index % 10}"}
        started = time.perf_counter()
        response = service.api.post("/pipelines", json=doc)
        create_ms.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
        names.append(name)
    return names, create_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=300)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--settle-s", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("api_latency.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="api-latency-") as tmp:
        config = Path(tmp) / "config"
        config.mkdir()
        service = Service(config, Path(tmp) / "data", workers=args.workers)
        try:
            service.start()
            names, create_ms = create_pipelines(service, args.pipelines)
            time.sleep(args.settle_s)  # let every worker pick its pipelines up (and fail them)
            rows = [summary("POST /pipelines", create_ms)]
            rows += measure(service, names, args.requests, "failing")
            stop = service.api.post("/pipelines/stop", params={"label": "team"}, timeout=300)
            assert stop.json()["matched"] == len(names), stop.text
            time.sleep(args.settle_s)
            rows += measure(service, names, args.requests, "stopped")
            listed = len(service.get("/pipelines").json())
        finally:
            service.close()
    load = [round(x, 1) for x in os.getloadavg()]
    print(f"load average {load} on {os.cpu_count()} CPUs (other processes skew the tail)")
    print(f"{args.pipelines} pipelines defined ({listed} listed), {args.workers} workers, "
          "sequential requests over one keep-alive connection")
    print(f"{'endpoint':44} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for row in rows:
        print(f"{row['endpoint']:44} {row['requests']:>5} {row['p50_ms']:>8} {row['p99_ms']:>8} "
              f"{row['max_ms']:>8}")
    args.out.write_text(json.dumps({"pipelines": args.pipelines, "workers": args.workers,
                                    "load_average": load, "cpus": os.cpu_count(),
                                    "results": rows}, indent=2))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
