"""An HTTP inference service that rotates between signed registry versions without dropping requests.

Endpoints (JSON in and out, errors included; the service binds to 127.0.0.1 unless told otherwise):

``POST /infer``
    Body: one of ``{"spikes": T x B x N | T x N}`` (the input population's activity per step, as the
    encoding would produce it: spikes or currents), ``{"features": B x N | N}`` (values in [0, 1],
    encoded with the model's own input encoding) or ``{"rates": B x N | N}`` (Poisson rates in Hz);
    optional ``"seed"`` (integer, for the random encodings) and ``"return_spikes": true`` (adds the
    output population's spikes).  Limits (:class:`~neuro.deploy.infer_request.RequestLimits`): the
    body size (checked from ``Content-Length`` before the body is read), samples per request and
    steps, checked before anything is converted or encoded (:mod:`neuro.deploy.infer_request`).
    Answer: ``{"model", "version", "digest", "classes", "scores", "output_spike_counts"}``: every
    answer names the version that produced it.
``POST /rotate``  ``{"version": N}`` with ``Authorization: Bearer TOKEN``
    Loads version N *beside* the serving one: verifies its signature, file hashes, hash chain and
    certificate (:meth:`neuro.deploy.registry.Registry.verify`), builds the network, runs a smoke evaluation
    (finite outputs; accuracy on the first samples of the model's test set no worse than the signed
    record's test accuracy minus a tolerance), and only then swaps the serving version with one
    reference assignment.  Requests already running keep the version they started with (each
    request takes one reference at its start), so nothing is dropped or mixed.  A refused version
    (unsigned, tampered, failing certificate or smoke test) answers 422 with the failing check; the
    service keeps serving the old version (Triton's explicit model control semantics).  Rotating to
    the version already serving changes nothing (``"unchanged": true``, no rollback entry).
``POST /rollback``  (bearer token)
    Returns to the version served before the last successful rotation.
``GET /health``, ``GET /version``
    Liveness, and the serving version with its record summary and rotation history.

Errors are ``{"error": MESSAGE, "key": KEY (when a body key is at fault), "version": SERVING}`` with
status 400 (malformed), 401 (no or wrong token), 404/405 (endpoint, method), 408 (the body did not
arrive within the read timeout), 409 (nothing to roll back to), 411 (chunked body), 413 (over a
limit), 422 (version refused) or 500.  A connection whose body stops short of its
``Content-Length`` is answered 408 and closed after ``read_timeout`` seconds.

Use :class:`ModelService` in code, :func:`make_server` for a server object, :func:`cli_serve` for the
``neuro serve`` command.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

from neuro.deploy.infer_request import RequestError, RequestLimits, infer_input
from neuro.deploy.registry import Registry
from neuro.deploy.signing import RegistryError, VerificationError
from neuro.training.outputs import json_safe

__all__ = ["LoadedVersion", "ModelService", "RotationError", "ServiceServer", "cli_serve", "load_version",
           "make_server", "smoke_evaluate"]

#: Seconds a request's headers and body may take to arrive (then 408 and the connection closes).
READ_TIMEOUT = 10.0
_TEST_SETS: dict[str, Any] = {}
_TEST_SETS_LOCK = threading.Lock()


class RotationError(RuntimeError):
    """A version was refused; ``check`` names the failing step (``signature``, ``hash:FILE``,
    ``chain``, ``certificate``, ``record``, ``smoke``, ``load``)."""

    def __init__(self, check: str, message: str) -> None:
        self.check = check
        super().__init__(message)


@dataclass
class LoadedVersion:
    """A verified version with its network, ready to serve.

    Attributes:
        model, version, digest: name, number and signed-record digest.
        graph, network: the model graph and its Norse network (inference mode).
        record: the signed record's predicate.
        smoke: results of the smoke evaluation.
        loaded_at: ``time.time()`` when it finished loading.
    """

    model: str
    version: int
    digest: str
    graph: Any
    network: Any
    record: dict[str, Any]
    smoke: dict[str, Any] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (what ``GET /version`` reports)."""
        return {"model": self.model, "version": self.version, "digest": self.digest,
                "graph_hash": self.graph.canonical_hash(), "created": self.record.get("created"),
                "key_id": self.record.get("key_id"), "formats": self.record.get("formats"),
                "test_accuracy": self.record.get("metrics", {}).get("test_accuracy"), "smoke": self.smoke}


def _test_set(graph):
    """The model's test split, encoded with the model's own encoder (cached per model graph)."""
    from neuro.training.data import load_split

    key = graph.canonical_hash()
    with _TEST_SETS_LOCK:
        if key not in _TEST_SETS:
            _TEST_SETS[key] = load_split(graph, "test")
        return _TEST_SETS[key]


@torch.no_grad()
def smoke_evaluate(graph, network, record: dict[str, Any], *, samples: int = 64, tolerance: float = 0.15
                   ) -> dict[str, Any]:
    """Run ``samples`` test samples; raise RotationError(``smoke``) if the version misbehaves.

    Checks: the readout is finite; with a data set, the accuracy on the first ``samples`` test
    samples is at least ``recorded test_accuracy - tolerance`` (or above chance when no accuracy is
    recorded).  Returns ``{"samples", "accuracy", "required", "seconds"}``.
    """
    from neuro.rules.bptt import readout_scores

    t0 = time.perf_counter()
    if graph.data is None:
        (inp,) = graph.inputs()
        gen = torch.Generator().manual_seed(0)
        x = (torch.rand(graph.steps, min(samples, 8), inp.size, generator=gen) < 0.2).to(network.dtype)
        out = network(x).readout
        if not bool(torch.isfinite(out).all()):
            raise RotationError("smoke", "the network's readout is not finite")
        return {"samples": x.shape[1], "accuracy": None, "required": None,
                "seconds": round(time.perf_counter() - t0, 4)}
    data = _test_set(graph)
    n = min(samples, len(data))
    idx = torch.arange(n)
    x = data.encode(idx, 0, dtype=network.dtype)
    readout = network(x).readout
    if not bool(torch.isfinite(readout).all()):
        raise RotationError("smoke", "the network's readout is not finite")
    scores = readout_scores(readout, graph.training.readout)
    acc = float((scores.argmax(-1) == data.labels[idx]).float().mean())
    recorded = record.get("metrics", {}).get("test_accuracy")
    chance = 1.0 / data.n_classes
    required = (recorded - tolerance) if isinstance(recorded, int | float) else chance
    result = {"samples": n, "accuracy": acc, "required": round(required, 4),
              "seconds": round(time.perf_counter() - t0, 4)}
    if acc < required:
        raise RotationError("smoke", f"smoke evaluation: accuracy {acc:.3f} on {n} test samples is below "
                            f"{required:.3f} (signed test_accuracy {recorded} - tolerance {tolerance})")
    return result


def load_version(registry: Registry, model: str, version: int | None, trusted_keys: Iterable[Any], *,
                 smoke_samples: int = 64, smoke_tolerance: float = 0.15) -> LoadedVersion:
    """Verify a registry version, build its network and smoke-test it.

    Raises:
        RotationError: naming the failing check.
    """
    from neuro.deploy.nir_io import load_into_network
    from neuro.sim.network import compute_dtype

    try:
        v = registry.verify(model, version, trusted_keys)
    except VerificationError as exc:
        raise RotationError(exc.check, str(exc)) from None
    except RegistryError as exc:
        raise RotationError("load", str(exc)) from None
    try:
        network = load_into_network(v.graph, v.weights, dtype=compute_dtype(v.graph))
    except (ValueError, RuntimeError, KeyError) as exc:
        raise RotationError("load", f"cannot build the network of {model} v{v.version}: {exc}") from None
    smoke = smoke_evaluate(v.graph, network, v.record, samples=smoke_samples, tolerance=smoke_tolerance)
    return LoadedVersion(model=v.model, version=v.version, digest=v.digest, graph=v.graph, network=network,
                         record=v.record, smoke=smoke)


class ModelService:
    """The serving state: the current version, the history for rollback, and rotation.

    Args:
        registry: the registry (path or :class:`Registry`).
        model: the model name (default: the registry's only model).
        trusted_keys: public keys (objects or PEM paths) whose signatures are accepted.
        token: the bearer token ``/rotate`` and ``/rollback`` require.
        version: version to start with (default: the latest that verifies).
        smoke_samples, smoke_tolerance: see :func:`smoke_evaluate`.
        limits: what one /infer request may ask for (default :class:`RequestLimits`).
    """

    def __init__(self, registry: str | Path | Registry, model: str | None = None, *,
                 trusted_keys: Iterable[Any], token: str, version: int | None = None,
                 smoke_samples: int = 64, smoke_tolerance: float = 0.15,
                 limits: RequestLimits | None = None) -> None:
        self.registry = registry if isinstance(registry, Registry) else Registry(registry)
        models = self.registry.models()
        if model is None:
            if len(models) != 1:
                raise RegistryError(f"{self.registry.root}: choose a model ({', '.join(models) or 'none'})")
            model = models[0]
        if not token:
            raise ValueError("ModelService: a non-empty rotation token is required")
        self.model = model
        self.trusted_keys = list(trusted_keys)
        self._token = token.encode()
        self.smoke_samples, self.smoke_tolerance = smoke_samples, smoke_tolerance
        self.limits = RequestLimits() if limits is None else limits
        self._rotate_lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self.started = time.time()
        self._served = 0
        self._served_lock = threading.Lock()
        if version is None:  # newest version that verifies
            errors = []
            for v in reversed(self.registry.versions(model)):
                try:
                    current = self._load(v)
                    break
                except RotationError as exc:
                    errors.append(f"v{v}: {exc}")
            else:
                detail = "; ".join(errors or ["none"])
                raise RotationError("load", f"no servable version of {model}: {detail}")
        else:
            current = self._load(version)
        self._current: LoadedVersion = current
        self._history: list[LoadedVersion] = []

    def _load(self, version: int) -> LoadedVersion:
        return load_version(self.registry, self.model, version, self.trusted_keys,
                            smoke_samples=self.smoke_samples, smoke_tolerance=self.smoke_tolerance)

    @property
    def current(self) -> LoadedVersion:
        """The version serving new requests."""
        return self._current

    def authorized(self, header: str | None) -> bool:
        """True if ``header`` is ``Bearer TOKEN`` with the right token (constant-time compare)."""
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self._token)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def infer(self, body: Any) -> dict[str, Any]:
        """Answer one inference request (see the module docstring).

        Raises:
            RequestError: the request is malformed or over a limit; it names the key at fault.
        """
        from neuro.rules.bptt import readout_scores

        v = self._current  # one reference for the whole request: a swap cannot change it midway
        graph, net = v.graph, v.network
        request = infer_input(body, graph, net.dtype, self.limits)
        result = net(request.x)
        scores = readout_scores(result.readout, graph.training.readout)
        out = {"model": v.model, "version": v.version, "digest": v.digest,
               "classes": scores.argmax(-1).tolist(), "scores": scores.tolist()}
        if graph.populations[graph.output].spiking:
            out["output_spike_counts"] = result.readout.sum(0).tolist()
            if request.return_spikes:
                out["output_spikes"] = result.readout.transpose(0, 1).tolist()
        with self._served_lock:
            self._served += 1
        return out

    # ------------------------------------------------------------------ rotation
    def rotate(self, version: int) -> dict[str, Any]:
        """Load ``version`` beside the serving one, check it, swap; RotationError if refused.

        Rotating to the serving version is a no-op (``"unchanged": True``, no rollback entry)."""
        if isinstance(version, bool) or not isinstance(version, int):
            raise RotationError("request", f'"version" must be an integer, got {version!r}')
        with self._rotate_lock:
            old = self._current
            if version == old.version:  # already serving: no reload, no rollback entry
                event = {"action": "rotate", "from": old.version, "to": old.version, "ok": True,
                         "unchanged": True, "time": time.time()}
                self.events.append(event)
                return event
            t0 = time.perf_counter()
            try:
                new = self._load(version)
            except RotationError as exc:
                self.events.append({"action": "rotate", "to": version, "ok": False, "check": exc.check,
                                    "error": str(exc), "serving": old.version, "time": time.time()})
                raise
            self._history.append(old)
            del self._history[:-8]  # keep a few for rollback
            self._current = new  # the atomic swap
            event = {"action": "rotate", "from": old.version, "to": new.version, "ok": True,
                     "seconds": round(time.perf_counter() - t0, 4), "smoke": new.smoke, "time": time.time()}
            self.events.append(event)
            return event

    def rollback(self) -> dict[str, Any]:
        """Serve the version that served before the last successful rotation."""
        with self._rotate_lock:
            if not self._history:
                raise RotationError("rollback", "no previous version to roll back to")
            old, self._current = self._current, self._history.pop()
            event = {"action": "rollback", "from": old.version, "to": self._current.version, "ok": True,
                     "time": time.time()}
            self.events.append(event)
            return event

    def health(self) -> dict[str, Any]:
        """Liveness: status, model, serving version, uptime, requests served."""
        return {"status": "ok", "model": self.model, "version": self._current.version,
                "uptime_s": round(time.time() - self.started, 3), "requests": self.requests}

    @property
    def requests(self) -> int:
        """Inference requests answered so far."""
        return self._served

    def version_info(self) -> dict[str, Any]:
        """The serving version's summary, the rollback history and the last rotation events."""
        return {**self._current.summary(), "history": [v.version for v in self._history],
                "events": self.events[-20:]}


# --------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connection
    server: ServiceServer
    _ROUTES = {"/infer": "POST", "/rotate": "POST", "/rollback": "POST", "/health": "GET", "/version": "GET"}

    @property
    def timeout(self) -> float:  # read by StreamRequestHandler.setup: the socket's timeout
        return self.server.read_timeout

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, obj: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = (json.dumps(json_safe(obj), allow_nan=False) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, key: str | None = None, *,
               headers: dict[str, str] | None = None, **extra: Any) -> None:
        body = {"error": message, **({"key": key} if key is not None else {}), **extra,
                "version": self.server.service.current.version}
        self._send(status, body, headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (bad request line, unsupported method, ...) as JSON too."""
        self.close_connection = True
        self._error(code, message or self.responses.get(code, ("error",))[0])

    def _read_body(self, length: int) -> bytes:
        """``length`` bytes of body, all of which must arrive within the read timeout."""
        deadline = time.monotonic() + self.server.read_timeout
        parts, left = [], length
        while left:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.connection.settimeout(remaining)
            chunk = self.rfile.read1(min(left, 1 << 16))
            if not chunk:
                raise ConnectionError("the client closed the connection mid-body")
            parts.append(chunk)
            left -= len(chunk)
        self.connection.settimeout(self.server.read_timeout)
        return b"".join(parts)

    def _discard(self, length: int) -> None:
        """After refusing a body unread: close our side and drop what the client still sends (for
        at most the read timeout), so that it gets to read the answer instead of a reset."""
        deadline = time.monotonic() + self.server.read_timeout
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            while length > 0 and (remaining := deadline - time.monotonic()) > 0:
                self.connection.settimeout(remaining)
                chunk = self.rfile.read1(1 << 16)
                if not chunk:
                    break
                length -= len(chunk)

    def _body(self) -> dict[str, Any] | None:
        """The JSON body, or None after answering the error (size checked before reading)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._error(411, "send the body with a Content-Length (chunked bodies are not accepted)")
            return None
        text = self.headers.get("Content-Length") or "0"
        if not text.strip().isdigit():
            self.close_connection = True
            self._error(400, f"Content-Length must be a byte count, got {text!r}")
            return None
        length, limit = int(text), self.server.service.limits.max_body
        if length > limit:
            self.close_connection = True
            self._error(413, f"request body of {length} bytes; at most {limit} bytes")
            self._discard(length)
            return None
        try:
            raw = self._read_body(length)
        except TimeoutError:
            self.close_connection = True
            self._error(408, f"the body did not arrive within {self.server.read_timeout:g} s "
                        f"(Content-Length {length})")
            return None
        except ConnectionError:  # the client went away: nobody to answer
            self.close_connection = True
            return None
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, RecursionError) as exc:
            self._error(400, f"the body is not valid JSON: {exc}")
            return None
        if not isinstance(body, dict):
            self._error(400, 'the body must be a JSON object, e.g. {"features": [[0.2, 0.3, 0.8, 0.7]]}')
            return None
        return body

    def _route(self, method: str) -> bool:
        """True if ``self.path`` takes ``method``; otherwise answers 404 or 405."""
        want = self._ROUTES.get(self.path)
        if want == method:
            return True
        self.close_connection = True  # a body, if any, stays unread
        if want is None:
            self._error(404, f"no such endpoint {method} {self.path} (endpoints: "
                        + ", ".join(f"{m} {p}" for p, m in self._ROUTES.items()) + ")")
        else:
            self._error(405, f"{self.path} takes {want}, not {method}", headers={"Allow": want})
        return False

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if not self._route("GET"):
            return
        svc = self.server.service
        self._send(200, svc.health() if self.path == "/health" else svc.version_info())

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if not self._route("POST"):
            return
        svc = self.server.service
        if self.path != "/infer" and not svc.authorized(self.headers.get("Authorization")):
            self.close_connection = True  # the body stays unread
            self._error(401, f"{self.path} needs 'Authorization: Bearer TOKEN' (the token `neuro serve` "
                        "reads from --token-file or NEURO_SERVE_TOKEN)")
            return
        body = self._body()
        if body is None:
            return
        if self.path == "/infer":
            try:
                self._send(200, svc.infer(body))
            except RequestError as exc:
                self._error(exc.status, str(exc), exc.key)
            except Exception as exc:  # noqa: BLE001 - a request must never take the service down
                self._error(500, f"{type(exc).__name__}: {exc}")
            return
        try:
            event = svc.rotate(body.get("version")) if self.path == "/rotate" else svc.rollback()
            self._send(200, {**event, "version": svc.current.version})
        except RotationError as exc:
            if exc.check == "request":
                self._error(400, str(exc), "version", check=exc.check)
            elif exc.check == "rollback":
                self._error(409, str(exc), check=exc.check)
            else:
                self._error(422, str(exc), check=exc.check, refused=body.get("version"))


class ServiceServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer holding a :class:`ModelService` (daemon threads, deep listen queue).

    ``read_timeout``: seconds a request's headers and body may take to arrive, and an idle
    keep-alive connection may wait for its next request."""

    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: ModelService, verbose: bool = False,
                 read_timeout: float = READ_TIMEOUT) -> None:
        self.service = service
        self.verbose = verbose
        self.read_timeout = float(read_timeout)
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """``http://HOST:PORT``."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def make_server(service: ModelService, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False,
                read_timeout: float = READ_TIMEOUT) -> ServiceServer:
    """A server for ``service`` bound to ``host:port`` (port 0: any free port); call
    ``serve_forever()`` (e.g. in a thread) and ``shutdown()``.  ``read_timeout``: seconds."""
    return ServiceServer((host, port), service, verbose=verbose, read_timeout=read_timeout)


def _read_token(token_file: str | None) -> str:
    """The rotation token: ``NEURO_SERVE_TOKEN``, or the token file (made with a random token, mode
    0600, when it does not exist; refused when group or others can read it)."""
    env = os.environ.get("NEURO_SERVE_TOKEN")
    if env and env.strip():
        return env.strip()
    if token_file is None:
        raise ValueError("a rotation token is needed for /rotate and /rollback: pass --token-file FILE "
                         "(made with a random token, mode 600, if it does not exist) "
                         "or set NEURO_SERVE_TOKEN")
    path = Path(token_file)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        print(f"neuro serve: wrote a new rotation token to {path} (mode 600)", file=sys.stderr)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ValueError(f"{path}: token file mode is {mode:o}; it must be 600 (chmod 600 {path})")
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"{path}: the token file is empty (delete it and `neuro serve` makes a new one)")
    return token


def cli_serve(registry: str, keys: list[str], *, model: str | None = None, version: int | None = None,
              host: str = "127.0.0.1", port: int = 8321, token_file: str | None = None,
              threads: int = 1, verbose: bool = False) -> int:
    """``neuro serve REGISTRY --key PUBLIC.pem [--key ...] [--model NAME] [--version N] [--host 127.0.0.1]
    [--port 8321] [--token-file FILE] [--threads 1] [--verbose]``.

    Serves until interrupted; returns 0, or 2 when no version can be served.
    """
    torch.set_num_threads(max(1, threads))
    try:
        service = ModelService(registry, model, trusted_keys=keys, token=_read_token(token_file),
                               version=version)
        server = make_server(service, host, port, verbose=verbose)
    except (RotationError, RegistryError, ValueError, OSError) as exc:
        print(f"neuro serve: {exc}", file=sys.stderr)
        return 2
    v = service.current
    print(f"neuro serve: {v.model} v{v.version} on {server.url} (smoke accuracy {v.smoke.get('accuracy')}); "
          "POST /infer, and /rotate or /rollback with the bearer token", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
