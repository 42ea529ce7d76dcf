"""Warm rotation under load: 16 concurrent clients while the service rotates 20 times.

Loopback only and bounded in time: the service (``neuro.deploy.serve``) runs in a child process bound to
127.0.0.1; 16 client threads send ``POST /infer`` requests (one Yin-Yang sample each, persistent
HTTP/1.1 connections) for ``--seconds`` (default 60) while a rotator thread makes 20 ``POST /rotate``
calls, 3 of them to bad versions (unsigned, a tampered weight file, and a signed version whose weights
fail the smoke evaluation).  Reported and checked:

* failed or dropped requests (any non-200 answer, connection error or timeout): must be 0;
* every answer is tagged with a valid version: one that was serving at some moment of the request;
* the 3 bad versions are refused (422) and the 17 good rotations succeed;
* p99 latency of requests overlapping a rotation <= 2 x p99 of the other (steady-state) requests.

Usage::

    python benchmarks/bench_serve.py                      # 60 s; trains a small Yin-Yang model first
    python benchmarks/bench_serve.py --seconds 20 --run runs/yinyang_bptt --json out.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import print_machine  # noqa: E402

TOKEN = "bench-token"


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))
    return s[k]


def prepare(workdir: Path, run: Path | None, train_samples: int) -> dict:
    """A registry with 17 good versions and 3 bad ones; returns their numbers."""
    import torch
    from neuro.deploy.run_folder import read_run
    from safetensors.torch import save

    from neuro.deploy.registry import Registry
    from neuro.deploy.signing import generate_key
    from neuro.model.spec import load_model

    if run is None:
        from neuro.training import train

        run = workdir / "run"
        graph = load_model(Path(__file__).resolve().parent.parent / "models" / "yinyang_bptt.toml")
        print(f"training yinyang_bptt (2 epochs, {train_samples} samples) -> {run}", flush=True)
        train(graph, epochs=2, max_train=train_samples, out_dir=run, progress=False)
    generate_key(workdir / "signer.pem")
    reg = Registry(workdir / "registry")
    folder = read_run(run)  # a complete run: its manifest and file hashes are checked
    graph, metrics, weights = folder.graph, folder.metrics, folder.weights
    gen = torch.Generator().manual_seed(0)
    good, bad = [], {}
    for i in range(18):  # v1 serves first; 17 more to rotate to
        if i == 0:
            w = weights
        else:  # a slightly different model each time (float32 values, as a retrain would give)
            w = {k: (v * (1 + 1e-3 * torch.randn(v.shape, generator=gen))).float()
                 for k, v in weights.items()}
        good.append(reg.publish(graph, save(w), workdir / "signer.pem", metrics=metrics, verify=False))
    # signed and certified, but the readout is dead (zero weights) while the record claims the run's
    # accuracy: the smoke evaluation must refuse it
    dead = {k: (torch.zeros_like(v) if k == "hidden_readout" else v) for k, v in weights.items()}
    bad["smoke"] = reg.publish(graph, save(dead), workdir / "signer.pem", metrics=metrics, verify=False)
    bad["unsigned"] = reg.publish(graph, save(weights), workdir / "signer.pem", metrics=metrics, verify=False)
    env_path = reg.path(graph.name, bad["unsigned"]) / "envelope.dsse.json"
    env = json.loads(env_path.read_text())
    env["signatures"] = []
    env_path.write_text(json.dumps(env, sort_keys=True, separators=(",", ":")) + "\n")
    bad["tampered"] = reg.publish(graph, save(weights), workdir / "signer.pem", metrics=metrics, verify=False,
                                  check_head=False)  # on top of the unsigned one, on purpose
    wpath = reg.path(graph.name, bad["tampered"]) / "weights.safetensors"
    data = bytearray(wpath.read_bytes())
    data[len(data) // 2] ^= 0x01
    wpath.write_bytes(bytes(data))
    return {"registry": str(reg.root), "model": graph.name, "good": good, "bad": bad,
            "public_key": str(workdir / "signer.pub.pem"), "test_accuracy": metrics.get("test_accuracy")}


def serve_child(registry: str, key: str, port_file: str) -> None:
    """Child process: serve v1 on 127.0.0.1 (any free port), write the port, serve until killed."""
    import torch

    from neuro.deploy.serve import ModelService, make_server

    torch.set_num_threads(1)
    service = ModelService(registry, trusted_keys=[key], token=TOKEN, version=1)
    server = make_server(service, "127.0.0.1", 0)
    Path(port_file + ".tmp").write_text(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


def _request(conn, method: str, path: str, body: dict, token: str | None = None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=json.dumps(body), headers=headers)
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def run_load(port: int, setup: dict, seconds: float, clients: int, rotations: int) -> dict:
    results: list[tuple[float, float, int, int | None, str | None]] = []
    lock = threading.Lock()
    stop = threading.Event()
    rng = random.Random(1)
    samples = [[rng.random(), rng.random()] for _ in range(256)]
    samples = [[x, y, 1 - x, 1 - y] for x, y in samples]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        local, k = [], i
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                status, body = _request(conn, "POST", "/infer", {"features": samples[k % len(samples)]})
                local.append((t0, time.perf_counter(), status, body.get("version"), body.get("error")))
            except Exception as exc:  # noqa: BLE001 - a failed request is a result to report
                local.append((t0, time.perf_counter(), -1, None, repr(exc)))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            k += clients
        conn.close()
        with lock:
            results.extend(local)

    good = setup["good"][1:]
    bad = list(setup["bad"].items())
    plan: list[tuple[str, int]] = [("good", v) for v in good[: rotations - len(bad)]]
    for j, (kind, v) in enumerate(bad):  # bad versions spread over the run
        plan.insert(3 + j * (len(plan) // len(bad)), (kind, v))
    windows: list[dict] = []

    def rotator() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        t_begin = time.perf_counter()
        first, last = 0.15 * seconds, 0.85 * seconds
        for j, (kind, v) in enumerate(plan):
            at = first + j * (last - first) / max(1, len(plan) - 1)
            while time.perf_counter() - t_begin < at and not stop.is_set():
                time.sleep(0.01)
            t0 = time.perf_counter()
            status, body = _request(conn, "POST", "/rotate", {"version": v}, token=TOKEN)
            windows.append({"kind": kind, "version": v, "start": t0, "end": time.perf_counter(),
                            "status": status, "serving": body.get("version"), "check": body.get("check"),
                            "server_seconds": body.get("seconds")})
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    rot = threading.Thread(target=rotator)
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    rot.start()
    time.sleep(seconds)
    stop.set()
    rot.join()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start

    # which versions may tag a request: those serving at some moment of [t0, t1]
    timeline = [(t_start - 1.0, 1)]
    for w in windows:
        if w["status"] == 200:
            timeline.append((w["start"], w["serving"]))  # swap happens inside the rotate window

    def valid_versions(t0: float, t1: float) -> set[int]:
        out = set()
        for idx, (ts, v) in enumerate(timeline):
            nxt = timeline[idx + 1][0] if idx + 1 < len(timeline) else float("inf")
            end = max(nxt, next((w["end"] for w in windows if w["start"] == nxt), nxt))
            if ts <= t1 and end >= t0:
                out.add(v)
        return out

    failed = [r for r in results if r[2] != 200]
    mistagged = [r for r in results if r[2] == 200 and r[3] not in valid_versions(r[0], r[1])]
    during, steady = [], []
    for t0, t1, status, _, _ in results:
        if status != 200:
            continue
        overlap = any(t0 <= w["end"] and t1 >= w["start"] for w in windows)
        (during if overlap else steady).append((t1 - t0) * 1e3)
    refused = [w for w in windows if w["kind"] != "good"]
    accepted = [w for w in windows if w["kind"] == "good"]
    p99_steady, p99_during = _percentile(steady, 99), _percentile(during, 99)
    summary = {
        "clients": clients, "seconds": round(wall, 2), "requests": len(results),
        "throughput_rps": round(len(results) / wall, 1),
        "failed_or_dropped": len(failed), "mistagged": len(mistagged),
        "rotations": len(windows), "accepted": sum(w["status"] == 200 for w in accepted),
        "refused_bad": sum(w["status"] == 422 for w in refused), "bad_attempts": len(refused),
        "refusal_checks": {w["kind"]: w["check"] for w in refused},
        "rotation_ms_p50": round(_percentile([(w["end"] - w["start"]) * 1e3 for w in windows], 50), 1),
        "rotation_ms_max": round(max((w["end"] - w["start"]) * 1e3 for w in windows), 1) if windows else None,
        "requests_steady": len(steady), "requests_during_rotation": len(during),
        "p50_ms_steady": round(_percentile(steady, 50), 2), "p99_ms_steady": round(p99_steady, 2),
        "p50_ms_during": round(_percentile(during, 50), 2), "p99_ms_during": round(p99_during, 2),
        "p99_ratio": round(p99_during / p99_steady, 3) if steady and during else None,
        "errors_sample": [r[4] for r in failed[:5]],
    }
    summary["pass"] = bool(
        summary["failed_or_dropped"] == 0 and summary["mistagged"] == 0
        and summary["refused_bad"] == summary["bad_attempts"] == 3
        and summary["accepted"] == len(accepted) and summary["p99_ratio"] is not None
        and summary["p99_ratio"] <= 2.0
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration (default 60)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rotations", type=int, default=20, help="rotate calls, 3 of them to bad versions")
    parser.add_argument("--run", default=None, help="a `neuro train` output folder (default: train one)")
    parser.add_argument("--train-samples", type=int, default=1600)
    parser.add_argument("--json", default=None, help="also write the summary here")
    parser.add_argument("--serve-child", nargs=3, metavar=("REGISTRY", "KEY", "PORT_FILE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_child:
        serve_child(*args.serve_child)
        return 0
    info = print_machine()
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        work = Path(tmp)
        setup = prepare(work, Path(args.run) if args.run else None, args.train_samples)
        print(f"registry: {len(setup['good'])} good versions, bad: {setup['bad']}; "
              f"test accuracy of the run {setup['test_accuracy']}", flush=True)
        port_file = work / "port"
        child = subprocess.Popen([sys.executable, __file__, "--serve-child", setup["registry"],
                                  setup["public_key"], str(port_file)])
        try:
            deadline = time.time() + 300
            while not port_file.exists():
                if child.poll() is not None or time.time() > deadline:
                    raise SystemExit("bench_serve: the service did not start")
                time.sleep(0.1)
            port = int(port_file.read_text())
            summary = run_load(port, setup, args.seconds, args.clients, args.rotations)
        finally:
            child.terminate()
            child.wait(30)
    summary["machine"] = info
    for k, v in summary.items():
        if k != "machine":
            print(f"{k:>26}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
