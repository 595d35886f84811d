"""Load test of `transgan serve` on loopback: N clients for T seconds, with and without dynamic batching.

    python benchmarks/serve_load.py                  # horse2zebra-mobile on CPU, 8 clients, 30 s per configuration
    python benchmarks/serve_load.py --clients 8 --seconds 60 --rounds 6 --max-batch 1 8 --size 128 --engine onnx

One server per --max-batch value is started on 127.0.0.1 (free ports) and warmed up; then, in --rounds turns,
N client threads post real horse images (../shared/data/horse2zebra/testA, resized to --size) to one server
after the other, back to back, for T / rounds seconds each. Prints JSON: requests/s, p50/p99 latency, errors,
and the server's own batching figures (/info). Only the loopback address is ever contacted, and every loop is
bounded in time.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

HOST = "127.0.0.1"  # loopback only
ROOT = Path(__file__).resolve().parents[1]
HORSES = ROOT.parent / "shared" / "data" / "horse2zebra" / "testA"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 120) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "image/png"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def start_server(args: argparse.Namespace, max_batch: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "transgan", "serve", args.model, "--device", "cpu", "--engine", args.engine]
    command += ["--port", str(port), "--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    command += ["--log-level", "warning"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}: {server.stderr.read()[-2000:]}")
        try:
            if request(port, "GET", "/health", timeout=2)[0] == 200:
                return server, port
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise SystemExit(f"the server did not answer /health within {args.startup_timeout} s")


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)  # graceful: finishes in-flight requests
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def load_images(folder: Path, size: int, count: int) -> list[bytes]:
    files = sorted(folder.glob("*.png"))[:count]
    if not files:
        raise SystemExit(f"{folder}: no PNG images (pass --images DIR)")
    encoded = []
    for path in files:
        image = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def run_clients(port: int, images: list[bytes], clients: int, seconds: float) -> dict:
    """`clients` threads posting back to back until `seconds` pass: latencies (s), errors, wall time."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        k = index
        while time.monotonic() < stop_at:
            body = images[k % len(images)]
            k += clients
            started = time.perf_counter()
            try:
                status, payload = request(port, "POST", "/translate", body)
                ok = status == 200 and payload[:4] == b"\x89PNG"
                problem = None if ok else f"HTTP {status}: {payload[:200]!r}"
            except OSError as error:
                problem = f"{type(error).__name__}: {error}"
            elapsed = time.perf_counter() - started
            with lock:
                if problem is None:
                    latencies.append(elapsed)
                else:
                    errors.append(problem)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 300)  # a request in flight at the end may take one more batch
    return {"latencies": latencies, "errors": errors, "seconds": time.monotonic() - started}


def summarise(rounds: list[dict], batching: dict, max_batch: int) -> dict:
    """One configuration over all its rounds, with the server's own batching figures."""
    latencies = np.array([x for r in rounds for x in r["latencies"]]) * 1000
    errors = [e for r in rounds for e in r["errors"]]
    seconds = sum(r["seconds"] for r in rounds)
    cpu = sum(r["server_cpu_seconds"] for r in rounds)
    ms = latencies if len(latencies) else np.zeros(1)
    return {
        "max_batch": max_batch,
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": round(seconds, 1),
        "requests_per_s": round(len(latencies) / seconds, 3),
        "per_round_requests_per_s": [round(len(r["latencies"]) / r["seconds"], 2) for r in rounds],
        # Work per request, whatever else the machine runs: on a shared CPU the wall-clock rate follows the
        # share the scheduler gives, while CPU seconds per request show how much work serving really costs.
        "server_cpu_seconds": round(cpu, 1),
        "requests_per_server_cpu_second": round(len(latencies) / cpu, 3) if cpu else None,
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "mean_batch_size": batching["mean_batch_size"],
        "batch_sizes": batching["batch_sizes"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="horse2zebra-mobile", help="a translator (default: the shipped one)")
    parser.add_argument("--engine", default="auto", help="auto (torch for a model file), torch or onnx")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="load time per configuration, all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="the configurations take the load in turns")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-wait-ms", type=float, default=50.0, help="the servers' batching window")
    parser.add_argument("--size", type=int, default=256, help="request images are resized to size x size")
    parser.add_argument("--images", type=Path, default=HORSES, help="folder of PNG images to send")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args()
    images = load_images(args.images, args.size, 16)
    # Every server runs for the whole benchmark and they take the load in turns, round after round: on a
    # shared machine the background load drifts, and alternating short rounds spreads it over all of them.
    servers = [start_server(args, max_batch) for max_batch in args.max_batch]
    try:
        for _, port in servers:
            for body in images[: args.warmup]:  # first calls pay for lazy initialisation, not for serving
                request(port, "POST", "/translate", body)
        rounds: list[list[dict]] = [[] for _ in servers]
        for _ in range(args.rounds):
            for index, (server, port) in enumerate(servers):
                cpu_before = cpu_seconds(server.pid)
                result = run_clients(port, images, args.clients, args.seconds / args.rounds)
                result["server_cpu_seconds"] = cpu_seconds(server.pid) - cpu_before
                rounds[index].append(result)
        batching = [json.loads(request(port, "GET", "/info")[1])["batching"] for _, port in servers]
    finally:
        for server, _ in servers:
            stop_server(server)
    runs = [summarise(r, b, m) for r, b, m in zip(rounds, batching, args.max_batch)]
    report = {
        "model": args.model,
        "engine": args.engine,
        "device": "cpu",
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "clients": args.clients,
        "size": args.size,
        "max_wait_ms": args.max_wait_ms,
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "runs": runs,
    }
    if len(runs) > 1 and runs[0]["requests_per_s"]:
        report["speedup_vs_first"] = [round(run["requests_per_s"] / runs[0]["requests_per_s"], 2) for run in runs]
        if runs[0]["requests_per_server_cpu_second"]:
            report["cpu_efficiency_vs_first"] = [
                round(run["requests_per_server_cpu_second"] / runs[0]["requests_per_server_cpu_second"], 2)
                for run in runs
            ]
        first = runs[0]["per_round_requests_per_s"]
        report["median_round_speedup_vs_first"] = [
            round(float(np.median([b / a for a, b in zip(first, run["per_round_requests_per_s"]) if a])), 2)
            for run in runs
        ]
    print(json.dumps(report, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
