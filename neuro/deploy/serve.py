"""An HTTP inference service that rotates between signed registry versions without dropping requests.

Endpoints (JSON in and out; the service binds to 127.0.0.1 unless told otherwise):

``POST /infer``
    Body: one of ``{"spikes": T x B x N | T x N}`` (the input population's activity per step, as the
    encoding would produce it: spikes or currents), ``{"features": B x N | N}`` (values in [0, 1],
    encoded with the model's own input encoding) or ``{"rates": B x N | N}`` (Poisson rates in Hz;
    optional ``"seed"``).  Optional ``"return_spikes": true`` adds the output population's spikes.
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
    service keeps serving the old version (Triton's explicit model control semantics).
``POST /rollback``  (bearer token)
    Returns to the version served before the last successful rotation.
``GET /health``, ``GET /version``
    Liveness, and the serving version with its record summary and rotation history.

Use :class:`ModelService` in code, :func:`make_server` for a server object, :func:`cli_serve` for the
``neuro serve`` command.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import secrets
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

from neuro.deploy.registry import Registry, RegistryError, VerificationError
from neuro.training.data import encoder_for

__all__ = ["LoadedVersion", "ModelService", "RotationError", "ServiceServer", "cli_serve", "load_version",
           "make_server"]

MAX_BODY = 16 << 20  # bytes
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
    """The first samples of the model's test split (cached per data set description)."""
    from neuro.data import load_dataset

    key = json.dumps(graph.data.to_dict(), sort_keys=True)
    with _TEST_SETS_LOCK:
        if key not in _TEST_SETS:
            _TEST_SETS[key] = load_dataset(graph.data.name, "test", **dict(graph.data.options))
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
    x = data.encode(idx, 0, graph.steps, graph.dt, encoder=encoder_for(graph), dtype=network.dtype)
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


def _tensor(value: Any, what: str, dims: tuple[int, ...]) -> torch.Tensor:
    try:
        t = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: expected a nested list of numbers ({exc})") from None
    if t.dim() not in dims:
        raise ValueError(f"{what}: expected {' or '.join(f'{d}-D' for d in dims)} array, got shape "
                         f"{tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what}: values must be finite")
    return t


class ModelService:
    """The serving state: the current version, the history for rollback, and rotation.

    Args:
        registry: the registry (path or :class:`Registry`).
        model: the model name (default: the registry's only model).
        trusted_keys: public keys (objects or PEM paths) whose signatures are accepted.
        token: the bearer token ``/rotate`` and ``/rollback`` require.
        version: version to start with (default: the latest that verifies).
        smoke_samples, smoke_tolerance: see :func:`smoke_evaluate`.
        max_batch: largest batch one request may send.
    """

    def __init__(self, registry: str | Path | Registry, model: str | None = None, *,
                 trusted_keys: Iterable[Any], token: str, version: int | None = None,
                 smoke_samples: int = 64, smoke_tolerance: float = 0.15, max_batch: int = 256) -> None:
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
        self.smoke_samples, self.smoke_tolerance, self.max_batch = smoke_samples, smoke_tolerance, max_batch
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
    def infer(self, body: dict[str, Any]) -> dict[str, Any]:
        """Answer one inference request (see the module docstring); ValueError on a bad request."""
        from neuro.rules.bptt import readout_scores

        v = self._current  # one reference for the whole request: a swap cannot change it midway
        graph, net = v.graph, v.network
        (inp,) = graph.inputs()
        keys = [k for k in ("spikes", "features", "rates") if k in body]
        if len(keys) != 1:
            raise ValueError('send exactly one of "spikes" (T x B x N), "features" (B x N), "rates" (B x N)')
        key = keys[0]
        if key == "spikes":
            x = _tensor(body["spikes"], "spikes", (2, 3))
            if x.dim() == 2:
                x = x[:, None, :]
        else:
            f = _tensor(body[key], key, (1, 2))
            if f.dim() == 1:
                f = f[None]
            if f.shape[1] != inp.size:
                raise ValueError(f"{key}: expected {inp.size} values per sample, got {f.shape[1]}")
            seed = int(body.get("seed", 0))
            if key == "features":
                enc = encoder_for(graph)
                x = torch.stack([enc.encode_sample(s, graph.steps, graph.dt, ("serve", seed, i),
                                                   dtype=net.dtype) for i, s in enumerate(f)], dim=1)
            else:
                from neuro.data import poisson_encode, sample_generator

                if bool((f < 0).any()):
                    raise ValueError("rates: must be >= 0 Hz")
                x = torch.stack([poisson_encode(s, graph.steps, graph.dt, sample_generator(seed, "serve", i),
                                                dtype=net.dtype) for i, s in enumerate(f)], dim=1)
        if x.shape[2] != inp.size:
            raise ValueError(f"{key}: expected {inp.size} input channels, got {x.shape[2]}")
        if x.shape[1] > self.max_batch or x.shape[0] > 100 * graph.steps:
            raise ValueError(f"{key}: at most {self.max_batch} samples and {100 * graph.steps} steps "
                             "per request")
        result = net(x.to(net.dtype))
        scores = readout_scores(result.readout, graph.training.readout)
        out = {"model": v.model, "version": v.version, "digest": v.digest,
               "classes": scores.argmax(-1).tolist(), "scores": scores.tolist()}
        if graph.populations[graph.output].spiking:
            out["output_spike_counts"] = result.readout.sum(0).tolist()
            if body.get("return_spikes"):
                out["output_spikes"] = result.readout.transpose(0, 1).tolist()
        with self._served_lock:
            self._served += 1
        return out

    # ------------------------------------------------------------------ rotation
    def rotate(self, version: int) -> dict[str, Any]:
        """Load ``version`` beside the serving one, check it, swap; RotationError if refused."""
        if isinstance(version, bool) or not isinstance(version, int):
            raise RotationError("request", f"version must be an integer, got {version!r}")
        with self._rotate_lock:
            old = self._current
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

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj, allow_nan=False, default=_json_default) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(413, {"error": f"request body over {MAX_BODY} bytes"})
            self.close_connection = True
            return None
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            self._send(400, {"error": f"invalid JSON: {exc}"})
            return None
        if not isinstance(body, dict):
            self._send(400, {"error": "the body must be a JSON object"})
            return None
        return body

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        svc = self.server.service
        if self.path == "/health":
            self._send(200, svc.health())
        elif self.path == "/version":
            self._send(200, svc.version_info())
        else:
            self._send(404, {"error": f"no such endpoint GET {self.path}"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        svc = self.server.service
        body = self._body()
        if body is None:
            return
        if self.path == "/infer":
            try:
                self._send(200, svc.infer(body))
            except ValueError as exc:
                self._send(400, {"error": str(exc), "version": svc.current.version})
            except Exception as exc:  # noqa: BLE001 - a request must never take the service down
                self._send(500, {"error": f"{type(exc).__name__}: {exc}", "version": svc.current.version})
            return
        if self.path in ("/rotate", "/rollback"):
            if not svc.authorized(self.headers.get("Authorization")):
                self._send(401, {"error": "rotation needs 'Authorization: Bearer TOKEN'",
                                 "version": svc.current.version})
                return
            try:
                event = svc.rotate(body.get("version")) if self.path == "/rotate" else svc.rollback()
                self._send(200, {**event, "version": svc.current.version})
            except RotationError as exc:
                status = 409 if exc.check == "rollback" else (400 if exc.check == "request" else 422)
                self._send(status, {"error": str(exc), "check": exc.check, "refused": body.get("version"),
                                    "version": svc.current.version})
            return
        self._send(404, {"error": f"no such endpoint POST {self.path}"})


def _json_default(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    raise TypeError(f"not JSON-able: {type(obj).__name__}")


class ServiceServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer holding a :class:`ModelService` (daemon threads, deep listen queue)."""

    daemon_threads = True
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: ModelService, verbose: bool = False) -> None:
        self.service = service
        self.verbose = verbose
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """``http://HOST:PORT``."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def make_server(service: ModelService, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False
                ) -> ServiceServer:
    """A server for ``service`` bound to ``host:port`` (port 0: any free port); call
    ``serve_forever()`` (e.g. in a thread) and ``shutdown()``."""
    return ServiceServer((host, port), service, verbose=verbose)


def _read_token(token_file: str | None) -> str:
    env = os.environ.get("NEURO_SERVE_TOKEN")
    if env:
        return env.strip()
    if token_file is None:
        raise ValueError("a rotation token is needed: set NEURO_SERVE_TOKEN or pass --token-file FILE "
                         "(created with a random token, mode 0600, if it does not exist)")
    path = Path(token_file)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        print(f"neuro serve: wrote a new rotation token to {path} (mode 600)", file=sys.stderr)
    return path.read_text().strip()


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
    print(f"neuro serve: {v.model} v{v.version} on {server.url} (smoke accuracy {v.smoke.get('accuracy')})",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
