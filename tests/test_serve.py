"""The inference service on loopback: tagged answers, token-guarded rotation, refusals, rollback,
in-flight requests finishing on the old version, limits checked before any encoding, a read timeout,
errors that name the key.  Bounded: a handful of requests, each with a timeout."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from pathlib import Path

import pytest
from safetensors.torch import save

from neuro.deploy import infer_request
from neuro.deploy.infer_request import RequestError, RequestLimits
from neuro.deploy.registry import Registry
from neuro.deploy.serve import ModelService, RotationError, make_server, smoke_evaluate
from neuro.deploy.signing import generate_key
from neuro.model.spec import load_model
from neuro.sim.network import Network

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token"


def _version(reg: Registry, graph, key: Path, seed: int, claim: float | None = None, **publish) -> int:
    """Publish seeded weights; the record's test accuracy is what the smoke test measures (or ``claim``)."""
    net = Network(graph, seed=seed)
    net.requires_grad_(False)
    measured = smoke_evaluate(graph, net, {"metrics": {"test_accuracy": 0.0}})["accuracy"]
    wb = save({k: v.detach().contiguous() for k, v in net.weights.items()})
    acc = measured if claim is None else claim
    return reg.publish(graph, wb, key, metrics={"test_accuracy": acc}, **publish).version


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
    _version(reg, graph, tmp / "intruder.pem", 5, trusted_keys=[tmp / "k.pub.pem"])  # v5: an untrusted key
    _version(reg, graph, tmp / "k.pem", 6, check_head=False)  # v6 (on top of v5 on purpose): tampered below
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


def raw_request(server, data: bytes, *, pause: float = 0.0, trickle: bytes = b"",
                timeout: float = 20) -> bytes:
    """Send ``data`` on a fresh socket, then ``trickle`` one byte per ``pause`` seconds until the
    server answers (bounded by ``trickle``'s length), and read one response (or until the server
    closes the connection, or ``timeout``)."""
    with socket.create_connection(server.server_address[:2], timeout=timeout) as sock:
        sock.sendall(data)
        for b in trickle:
            if select.select([sock], [], [], pause)[0]:
                break  # the server answered
            sock.sendall(bytes([b]))
        raw = b""
        while True:  # until one whole response is in (or the server closes)
            head, sep, body = raw.partition(b"\r\n\r\n")
            if sep:
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                if len(body) >= length:
                    return raw
            chunk = sock.recv(65536)
            if not chunk:
                return raw
            raw += chunk


def parse_response(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body)


def post_head(length: int | str, extra: str = "") -> bytes:
    return (f"POST /infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def test_rotating_to_the_serving_version_is_a_no_op(setup):
    service, server, _ = setup
    start = service.current.version
    other = 2 if start != 2 else 1
    status, body = call(server, "POST", "/rotate", {"version": start}, token=TOKEN)
    assert status == 200 and body["unchanged"] is True and body["version"] == start
    history = call(server, "GET", "/version")[1]["history"]
    assert call(server, "POST", "/rotate", {"version": other}, token=TOKEN)[0] == 200
    status, body = call(server, "POST", "/rotate", {"version": other}, token=TOKEN)  # again: no entry
    assert status == 200 and body["unchanged"] is True
    assert call(server, "GET", "/version")[1]["history"] == [*history, start]
    status, body = call(server, "POST", "/rollback", {}, token=TOKEN)  # the first rollback goes back
    assert status == 200 and body["version"] == start


@pytest.mark.parametrize("body,key,fragment", [
    ({"features": [0.5] * 4, "seed": "abc"}, "seed", '"seed" must be an integer'),
    ({"features": [0.5] * 4, "seed": 1.5}, "seed", '"seed" must be an integer'),
    ({"features": [0.5] * 4, "return_spikes": "yes"}, "return_spikes", "true or false"),
    ({"feature": [0.5] * 4}, "feature", 'did you mean "features"'),
    ({"features": [[0.1, 0.2]]}, "features", "expected 4 values per sample"),
    ({"features": [[0.1, 0.2, 0.3, 0.4], [0.1]]}, "features", "rectangular"),
    ({"features": [[0.1, "x", 0.3, 0.4]]}, "features", "numbers"),
    ({"features": 0.5}, "features", "B x N or N"),
    ({"rates": [-1, 0, 0, 0]}, "rates", ">= 0 Hz"),
    ({"spikes": [0, 1, 0, 1]}, "spikes", "T x B x N or T x N"),
    ({"features": [0.5] * 4, "rates": [1] * 4}, "rates", "exactly one"),
    ({}, None, "exactly one"),
])
def test_request_errors_name_the_key(setup, body, key, fragment):
    service, server, _ = setup
    status, answer = call(server, "POST", "/infer", body)
    assert status == 400 and fragment in answer["error"] and answer["version"] == service.current.version
    assert answer.get("key") == key


def test_http_errors_are_json_with_their_status(setup):
    _, server, graph = setup
    status, body = call(server, "POST", "/rotate", {"version": "2"}, token=TOKEN)
    assert status == 400 and body["key"] == "version" and '"version" must be an integer' in body["error"]
    assert call(server, "POST", "/nowhere", {})[0] == 404
    status, headers, body = parse_response(raw_request(server, b"GET /infer HTTP/1.1\r\nHost: x\r\n"
                                                      b"Connection: close\r\n\r\n"))
    assert status == 405 and headers["allow"] == "POST" and "takes POST" in body["error"]
    status, _, body = parse_response(raw_request(server, b"PUT /infer HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == 501 and "error" in body
    status, _, body = parse_response(raw_request(server, post_head(7) + b"{nope}\n"[:7]))
    assert status == 400 and "not valid JSON" in body["error"]
    status, _, body = parse_response(raw_request(server, post_head("abc")))
    assert status == 400 and "Content-Length" in body["error"]
    status, _, body = parse_response(raw_request(server, post_head(0, "Transfer-Encoding: chunked\r\n")))
    assert status == 411
    status, body = call(server, "POST", "/infer", {"features": [[0.5] * 4] * 257})
    assert status == 413 and body["key"] == "features" and "at most 256" in body["error"]
    status, body = call(server, "POST", "/infer", {"spikes": [[0, 1, 0, 1]] * (100 * graph.steps + 1)})
    assert status == 413 and body["key"] == "spikes" and "steps" in body["error"]


def test_body_size_is_checked_before_the_body_is_read(setup):
    """413 from Content-Length alone: answered at once when no body follows, and a client that
    does send the oversized body still reads the answer (the server drops the body unparsed: a
    parsed body of spaces would be a 400)."""
    service, server, _ = setup
    t0 = time.perf_counter()
    status, headers, body = parse_response(raw_request(server, post_head(service.limits.max_body + 1)))
    assert status == 413 and "at most" in body["error"] and headers["connection"] == "close"
    assert time.perf_counter() - t0 < 5
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    try:
        conn.request("POST", "/infer", body=b" " * (service.limits.max_body + 1))
        resp = conn.getresponse()
        assert resp.status == 413 and "at most" in json.loads(resp.read())["error"]
    finally:
        conn.close()


def test_limits_are_checked_before_any_conversion_or_encoding(setup, monkeypatch):
    """A request over the sample limit is refused from the lengths of its lists: no tensor is
    built and nothing is encoded (the encoders and torch.tensor would fail the test)."""
    service, _, graph = setup

    def boom(*args, **kwargs):
        raise AssertionError("converted or encoded a request over its limits")

    body = {"features": [[0.5] * 4] * 100_000}  # about 2 MB of JSON
    with monkeypatch.context() as m:
        m.setattr("neuro.training.data.encoder_for", boom)
        m.setattr("neuro.data.poisson_encode", boom)
        m.setattr(infer_request.torch, "tensor", boom)
        for key in ("features", "rates"):
            with pytest.raises(RequestError) as err:
                service.infer({key: body["features"]})
            assert err.value.status == 413 and err.value.key == key
        with pytest.raises(RequestError) as err:
            service.infer({"spikes": [[[0.0] * 4] * 300] * graph.steps})
        assert err.value.status == 413 and "300 samples" in str(err.value)
    limits = RequestLimits(max_samples=2, max_steps=graph.steps)
    with pytest.raises(RequestError, match="at most 2 per request"):
        infer_request.infer_input({"features": [[0.5] * 4] * 3}, graph, service.current.network.dtype, limits)


def test_a_short_body_times_out_instead_of_hanging(setup):
    """A body shorter than its Content-Length gets 408 after the read timeout, and the connection
    (and its handler thread) ends; so does a body trickled in slower than the timeout allows."""
    service, _, _ = setup
    server = make_server(service, read_timeout=0.5)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        t0 = time.perf_counter()
        status, headers, body = parse_response(raw_request(server, post_head(100) + b'{"features"'))
        assert status == 408 and "0.5 s" in body["error"] and headers["connection"] == "close"
        assert time.perf_counter() - t0 < 5
        t0 = time.perf_counter()
        raw = raw_request(server, post_head(100) + b"{", pause=0.1, trickle=b'"features": [0.5, 0.5]' * 4)
        assert parse_response(raw)[0] == 408 and time.perf_counter() - t0 < 4  # the trickle lasts 9 s
        assert call(server, "GET", "/health")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_one_keep_alive_connection_survives_refused_requests(setup):
    """Refusals on a persistent connection leave it usable (the body was read) or close it (it was not)."""
    service, server, _ = setup
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    try:
        answers = []
        for path, body in [("/infer", {"features": [0.5] * 4, "seed": "abc"}), ("/nowhere", {"x": 1}),
                           ("/rotate", {"version": 1}), ("/infer", {"features": [0.5] * 4})]:
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            answers.append((resp.status, json.loads(resp.read()), resp.getheader("Connection")))
    finally:
        conn.close()
    assert [a[0] for a in answers] == [400, 404, 401, 200]
    assert answers[0][2] is None and answers[1][2] == answers[2][2] == "close"
    assert answers[3][1]["version"] == service.current.version
