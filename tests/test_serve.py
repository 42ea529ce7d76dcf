"""The inference service on loopback: tagged answers, token-guarded rotation, refusals, rollback,
in-flight requests finishing on the old version.  Bounded: a handful of requests, each with a timeout."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path

import pytest
from safetensors.torch import save

from neuro.deploy.registry import Registry, generate_key
from neuro.deploy.serve import ModelService, RotationError, make_server, smoke_evaluate
from neuro.model.spec import load_model
from neuro.sim.network import Network

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token"


def _version(reg: Registry, graph, key: Path, seed: int, claim: float | None = None) -> int:
    """Publish seeded weights; the record's test accuracy is what the smoke test measures (or ``claim``)."""
    net = Network(graph, seed=seed)
    net.requires_grad_(False)
    measured = smoke_evaluate(graph, net, {"metrics": {"test_accuracy": 0.0}})["accuracy"]
    wb = save({k: v.detach().contiguous() for k, v in net.weights.items()})
    acc = measured if claim is None else claim
    return reg.publish(graph, wb, key, metrics={"test_accuracy": acc}).version


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    generate_key(tmp / "k.pem")
    generate_key(tmp / "intruder.pem")
    graph = load_model(ROOT / "models" / "yinyang_bptt.toml")
    reg = Registry(tmp / "reg")
    for seed in (1, 2, 3):
        _version(reg, graph, tmp / "k.pem", seed)  # v1..v3: good
    _version(reg, graph, tmp / "k.pem", 4, claim=0.99)  # v4: signed, but fails the smoke test
    _version(reg, graph, tmp / "intruder.pem", 5)  # v5: signed by an untrusted key
    _version(reg, graph, tmp / "k.pem", 6)  # v6: tampered below
    w = reg.path(graph.name, 6) / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x10
    w.write_bytes(bytes(data))
    service = ModelService(reg, trusted_keys=[tmp / "k.pub.pem"], token=TOKEN, version=1)
    server = make_server(service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield service, server, graph
    server.shutdown()
    server.server_close()


def call(server, method: str, path: str, body: dict | None = None, token: str | None = None):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out


def test_bound_to_loopback_and_health(setup):
    service, server, _ = setup
    assert server.server_address[0] == "127.0.0.1"
    status, body = call(server, "GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["version"] == service.current.version


def test_infer_features_spikes_rates(setup):
    service, server, graph = setup
    status, body = call(server, "POST", "/infer", {"features": [[0.2, 0.3, 0.8, 0.7], [0.6, 0.5, 0.4, 0.5]]})
    assert status == 200 and len(body["classes"]) == 2 and body["version"] == service.current.version
    assert body["digest"] == service.current.digest
    status, body = call(server, "POST", "/infer", {"spikes": [[0, 1, 0, 1]] * graph.steps})
    assert status == 200 and len(body["scores"]) == 1
    status, body = call(server, "POST", "/infer", {"rates": [100, 0, 50, 10], "seed": 3})
    assert status == 200
    status, body = call(server, "POST", "/infer", {"features": [[0.1, 0.2]]})
    assert status == 400 and "4 values" in body["error"] and "version" in body


def test_rotation_needs_the_token(setup):
    service, server, _ = setup
    before = service.current.version
    for token in (None, "wrong"):
        status, body = call(server, "POST", "/rotate", {"version": 2}, token=token)
        assert status == 401 and body["version"] == before


@pytest.mark.parametrize("version,check", [(4, "smoke"), (5, "signature"), (6, "hash:weights.safetensors"),
                                           (99, "load")])
def test_bad_versions_are_refused_and_service_keeps_serving(setup, version, check):
    service, server, _ = setup
    before = service.current.version
    status, body = call(server, "POST", "/rotate", {"version": version}, token=TOKEN)
    assert status == 422 and body["check"] == check and body["version"] == before
    status, body = call(server, "POST", "/infer", {"features": [0.5, 0.5, 0.5, 0.5]})
    assert status == 200 and body["version"] == before


def test_rotate_and_rollback(setup):
    service, server, _ = setup
    start = service.current.version
    status, body = call(server, "POST", "/rotate", {"version": 3}, token=TOKEN)
    assert status == 200 and body["to"] == 3 and body["smoke"]["samples"] == 64
    assert call(server, "POST", "/infer", {"features": [0.5] * 4})[1]["version"] == 3
    status, body = call(server, "POST", "/rollback", {}, token=TOKEN)
    assert status == 200 and body["version"] == start
    status, body = call(server, "GET", "/version")
    assert body["version"] == start and any(e.get("check") == "smoke" for e in body["events"])


def test_in_flight_request_finishes_on_the_old_version(setup):
    """A request that started on version A completes on A even though the service swaps to B mid-way."""
    service, server, _ = setup
    old = service.current
    entered, release = threading.Event(), threading.Event()
    original = old.network.forward

    def slow_forward(*args, **kwargs):
        entered.set()
        assert release.wait(30)
        return original(*args, **kwargs)

    old.network.forward = slow_forward
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=call(server, "POST", "/infer",
                                                                   {"features": [0.5] * 4})))
    worker.start()
    try:
        assert entered.wait(30)
        target = 2 if old.version != 2 else 1
        status, _ = call(server, "POST", "/rotate", {"version": target}, token=TOKEN)
        assert status == 200 and service.current.version == target
        assert call(server, "POST", "/infer", {"features": [0.5] * 4})[1]["version"] == target
    finally:
        release.set()
        worker.join(30)
        del old.network.forward
    status, body = result["r"]
    assert status == 200 and body["version"] == old.version


def test_service_refuses_to_start_without_token(setup):
    service, _, _ = setup
    with pytest.raises(ValueError, match="token"):
        ModelService(service.registry, trusted_keys=service.trusted_keys, token="")
    with pytest.raises(RotationError):
        service.rotate("2")  # type: ignore[arg-type]
