"""A directory-based registry of signed, certified model versions.

Layout (one folder per model, one per committed version)::

    REGISTRY/
      MODEL/
        .lock                      writers hold an flock on it
        .staging-PID-RANDOM/       a version being written (ignored by readers, removed by writers)
        v000001/
          weights.safetensors      the trained weights (safetensors, no pickle)
          model.toml               the canonical (resolved) model file
          envelope.dsse.json       DSSE envelope: the signed in-toto Statement (the version record)
        v000002/ ...

**The version record** is an in-toto Statement (``_type`` https://in-toto.io/Statement/v1) with
``predicateType`` https://model_signing/signature/v1.0, as the OpenSSF model-signing specification
lays it out: one subject per file (``name``, ``digest.sha256``), and a predicate holding the model
name, the monotonic version number, the parent record's digest (a hash chain: sha256 of the parent's
signed payload), the canonical model file's graph hash, training settings and seed, the data set,
numeric formats, metrics, the certificate (:mod:`neuro.deploy.certify`), timestamps and the signer's key id.
The statement is encoded canonically (sorted keys, compact separators, ASCII) and signed with Ed25519
over the DSSE pre-authentication encoding ``PAE(payloadType, payload)``.  The envelope file itself is
written canonically too, and verification insists on that encoding, so a change to *any* byte of the
envelope, of a weight file or of the model file is detected.

**Commits are atomic**: a writer takes the model's lock, writes every file into a staging folder
(each file fsynced), fsyncs the folder, renames it to ``vNNNNNN`` (one atomic ``rename``) and fsyncs
the model folder.  A version exists if and only if its folder has its final name, so a crash at any
point leaves the registry readable and complete up to the last committed version; leftovers of a
crashed writer are staging folders, which readers ignore and the next writer removes.

Keys: :func:`generate_key` writes an Ed25519 private key (PEM, PKCS8, file mode 0600) and its public
key (PEM); the key id is the sha256 of the raw 32-byte public key.  Verification only trusts the
public keys it is given.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import stat
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuro import __version__

__all__ = [
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "Registry",
    "RegistryError",
    "VerificationError",
    "VerifiedVersion",
    "canonical_json",
    "cli_keygen",
    "cli_sign",
    "cli_verify",
    "cli_versions",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "pae",
]

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
ENVELOPE = "envelope.dsse.json"
WEIGHTS = "weights.safetensors"
MODEL = "model.toml"
FILES = (WEIGHTS, MODEL)
_VERSION_DIR = re.compile(r"^v(\d{6,})$")
#: Environment hook for crash tests: ``NEURO_REGISTRY_CRASH_AT=<point>`` makes a writer SIGKILL
#: itself at that point (see :data:`CRASH_POINTS`); ``NEURO_REGISTRY_SLOW_WRITE=<seconds>`` sleeps
#: between the chunks of every file write, so a test can kill a writer mid-write at random times.
CRASH_POINTS = ("staging-created", "mid-weights", "after-weights", "mid-envelope", "before-rename",
                "after-rename")


class RegistryError(RuntimeError):
    """A registry operation failed (unknown model or version, unreadable folder, bad input)."""


class VerificationError(RegistryError):
    """A version does not verify; ``check`` names what failed (``signature``, ``hash:FILE``,
    ``chain``, ``certificate``, ``record``, ``envelope``)."""

    def __init__(self, check: str, message: str) -> None:
        self.check = check
        super().__init__(f"verification failed [{check}]: {message}")


# --------------------------------------------------------------------------------------------------
# Encoding, keys, DSSE
# --------------------------------------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """Canonical encoding: JSON with sorted keys, compact separators, ASCII only, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: ``DSSEv1 SP len(type) SP type SP len(body) SP body``."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def key_id(public_key) -> str:
    """sha256 (hex) of the raw 32-byte Ed25519 public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def generate_key(private_path: str | Path, public_path: str | Path | None = None) -> str:
    """Create an Ed25519 key pair; returns its key id.

    The private key goes to ``private_path`` (PEM, PKCS8, unencrypted, mode 0600; the file must not
    exist), the public key to ``public_path`` (default: ``private_path`` with ``.pub.pem``).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path = Path(private_path)
    if public_path is None:
        public_path = private_path.with_name(private_path.name.removesuffix(".pem") + ".pub.pem")
    public_path = Path(public_path)
    if private_path.exists():
        raise RegistryError(f"{private_path} exists; refusing to overwrite a private key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(private_path, private_pem)
    _atomic_write(public_path, public_pem)
    return key_id(key.public_key())


def load_private_key(path: str | Path):
    """An Ed25519 private key from a PEM file; refuses files readable by group or others."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise RegistryError(f"{path}: private key file mode is {mode:o}; it must be 600 (chmod 600 {path})")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RegistryError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: str | Path):
    """An Ed25519 public key from a PEM file (or the public half of a private key file)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    data = Path(path).read_bytes()
    if b"PRIVATE KEY" in data:
        key = load_private_key(path)
        assert isinstance(key, Ed25519PrivateKey)
        return key.public_key()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise RegistryError(f"{path}: not an Ed25519 public key")
    return key


def _keyring(keys: Iterable[Any]) -> dict[str, Any]:
    """key id -> public key, from public keys, private keys or PEM paths."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ring = {}
    for k in keys:
        if isinstance(k, str | Path):
            k = load_public_key(k)
        if isinstance(k, Ed25519PrivateKey):
            k = k.public_key()
        ring[key_id(k)] = k
    return ring


def sign_statement(statement: Mapping[str, Any], private_key) -> dict[str, Any]:
    """A DSSE envelope around the canonical encoding of ``statement``, signed with Ed25519."""
    payload = canonical_json(statement)
    sig = private_key.sign(pae(PAYLOAD_TYPE, payload))
    return {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": key_id(private_key.public_key()),
                        "sig": base64.b64encode(sig).decode("ascii")}],
    }


def open_envelope(data: bytes, trusted: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    """Check a DSSE envelope's encoding and signature; returns ``(statement, payload bytes)``.

    Raises VerificationError (``envelope`` or ``signature``).
    """
    from cryptography.exceptions import InvalidSignature

    try:
        env = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VerificationError("envelope", f"not a JSON envelope ({exc})") from None
    if not isinstance(env, dict) or set(env) != {"payload", "payloadType", "signatures"}:
        raise VerificationError("envelope", "expected exactly payload, payloadType, signatures")
    if canonical_json(env) + b"\n" != data:
        raise VerificationError("envelope", "the envelope file is not in canonical form (edited?)")
    if env["payloadType"] != PAYLOAD_TYPE:
        raise VerificationError("envelope", f"payloadType {env['payloadType']!r}, expected {PAYLOAD_TYPE!r}")
    try:
        payload = base64.b64decode(env["payload"], validate=True)
    except (ValueError, TypeError) as exc:
        raise VerificationError("envelope", f"payload is not base64 ({exc})") from None
    if base64.b64encode(payload).decode("ascii") != env["payload"]:
        raise VerificationError("envelope", "payload is not canonical base64")
    sigs = env["signatures"]
    if not isinstance(sigs, list) or not sigs:
        raise VerificationError("signature", "the version is unsigned (no signatures)")
    message = pae(PAYLOAD_TYPE, payload)
    reasons = []
    for s in sigs:
        kid = s.get("keyid") if isinstance(s, dict) else None
        if kid not in trusted:
            reasons.append(f"key {str(kid)[:16]}... is not trusted")
            continue
        try:
            trusted[kid].verify(base64.b64decode(s.get("sig", ""), validate=True), message)
        except (InvalidSignature, ValueError, TypeError):
            reasons.append(f"bad signature by key {kid[:16]}...")
            continue
        try:
            statement = json.loads(payload.decode("ascii"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VerificationError("record", f"signed payload is not JSON ({exc})") from None
        return statement, payload
    raise VerificationError("signature", "; ".join(reasons))


# --------------------------------------------------------------------------------------------------
# Atomic files
# --------------------------------------------------------------------------------------------------


def _crash_point(name: str) -> None:
    """Test hook: SIGKILL this process at ``name`` if NEURO_REGISTRY_CRASH_AT says so."""
    if os.environ.get("NEURO_REGISTRY_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes, crash: str | None = None) -> None:
    """Write ``data`` to a new file and fsync it (in chunks when the slow-write hook is set)."""
    slow = float(os.environ.get("NEURO_REGISTRY_SLOW_WRITE", "0") or 0)
    with open(path, "xb") as f:
        if slow or crash:
            chunk = max(1, len(data) // 8)
            for i in range(0, len(data), chunk):
                f.write(data[i:i + chunk])
                f.flush()
                if crash and i >= len(data) // 2:
                    os.fsync(f.fileno())
                    _crash_point(crash)
                if slow:
                    time.sleep(slow)
        else:
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically: temp file, fsync, rename, fsync of the folder."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------


@dataclass
class VerifiedVersion:
    """A version whose signature, file hashes, hash chain link and certificate all verified.

    Attributes:
        model, version: the model name and version number.
        record: the signed predicate (``statement["predicate"]``).
        digest: sha256 of the signed payload (what the next version's ``parent`` names).
        graph: the :class:`~neuro.model.graph.ModelGraph` of ``model.toml``.
        weights: projection -> tensor, read from the same bytes that were hashed.
        path: the version folder.
    """

    model: str
    version: int
    record: dict[str, Any]
    digest: str
    graph: Any
    weights: dict[str, Any]
    path: Path


def _version_dir(version: int) -> str:
    return f"v{version:06d}"


class Registry:
    """A registry rooted at ``root`` (created on the first publish).

    Args:
        root: the registry folder.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ reading
    def models(self) -> list[str]:
        """Names of the models with at least one committed version."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and self.versions(p.name))

    def versions(self, model: str) -> list[int]:
        """Committed version numbers of ``model``, ascending (staging folders are ignored)."""
        folder = self.root / model
        if not folder.is_dir():
            return []
        out = []
        for p in folder.iterdir():
            m = _VERSION_DIR.match(p.name)
            if m and p.is_dir():
                out.append(int(m.group(1)))
        return sorted(out)

    def latest(self, model: str) -> int | None:
        """The newest committed version of ``model``, or None."""
        v = self.versions(model)
        return v[-1] if v else None

    def path(self, model: str, version: int) -> Path:
        """Folder of a committed version; RegistryError if there is none."""
        p = self.root / model / _version_dir(version)
        if not p.is_dir():
            have = self.versions(model)
            raise RegistryError(f"{self.root}: model {model!r} has no version {version} "
                                f"(versions: {', '.join(map(str, have)) or 'none'})")
        return p

    def read_record(self, model: str, version: int) -> dict[str, Any]:
        """The predicate of a version's envelope, WITHOUT verifying it (for listings)."""
        data = (self.path(model, version) / ENVELOPE).read_bytes()
        env = json.loads(data)
        return json.loads(base64.b64decode(env["payload"]))["predicate"]

    def _payload_digest(self, model: str, version: int) -> str:
        data = (self.path(model, version) / ENVELOPE).read_bytes()
        try:
            return _sha256(base64.b64decode(json.loads(data)["payload"], validate=True))
        except (ValueError, KeyError, TypeError) as exc:
            raise VerificationError("chain", f"{model} v{version}: unreadable envelope ({exc})") from None

    # ------------------------------------------------------------------ verification
    def verify(self, model: str, version: int | None, trusted_keys: Iterable[Any], *,
               check_certificate: bool = True, chain: bool = True) -> VerifiedVersion:
        """Verify one version; returns it loaded, or raises :class:`VerificationError`.

        Checks, in order: the envelope's canonical encoding and an Ed25519 signature by a trusted
        key (``signature``/``envelope``); the statement layout, model name and version number
        (``record``); the sha256 of every file against the signed subjects (``hash:FILE``); the
        parent digest against the previous version's signed payload and, with ``chain``, the
        previous versions' signatures (``chain``); the certificate, re-running every check on the
        stored graph and weights (``certificate``).

        Args:
            model: model name.
            version: version number, or None for the latest.
            trusted_keys: public keys (objects or PEM paths) whose signatures count.
        """
        from safetensors.torch import load

        from neuro.deploy.certify import CertificationError
        from neuro.deploy.certify import check_certificate as _check_cert
        from neuro.model.spec import ModelFileError, loads_model

        trusted = _keyring(trusted_keys)
        if not trusted:
            raise VerificationError("signature", "no trusted public key given")
        if version is None:
            version = self.latest(model)
            if version is None:
                raise RegistryError(f"{self.root}: no versions of model {model!r}")
        folder = self.path(model, version)
        try:
            envelope = (folder / ENVELOPE).read_bytes()
        except FileNotFoundError:
            raise VerificationError("signature", f"{model} v{version} is unsigned (no {ENVELOPE})") from None
        statement, payload = open_envelope(envelope, trusted)
        if (not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE
                or statement.get("predicateType") != PREDICATE_TYPE):
            raise VerificationError("record", "not an in-toto Statement with the model-signing predicate")
        record = statement.get("predicate") or {}
        if record.get("model") != model or record.get("version") != version:
            raise VerificationError("record", f"record names {record.get('model')!r} "
                                    f"v{record.get('version')}, stored as {model!r} v{version}")
        subjects = {s["name"]: s["digest"]["sha256"] for s in statement.get("subject", [])}
        if set(subjects) != set(FILES):
            raise VerificationError("record", f"subjects {sorted(subjects)}, expected {sorted(FILES)}")
        blobs = {}
        for name in FILES:
            try:
                blobs[name] = (folder / name).read_bytes()
            except FileNotFoundError:
                raise VerificationError(f"hash:{name}", f"{name} is missing") from None
            if _sha256(blobs[name]) != subjects[name]:
                raise VerificationError(f"hash:{name}", f"{name} does not match its signed sha256 (tampered)")
        parent = record.get("parent")
        if version == 1:
            if parent is not None:
                raise VerificationError("chain", "version 1 names a parent")
        else:
            if version - 1 not in self.versions(model):
                raise VerificationError("chain", f"parent version {version - 1} is missing")
            if parent != self._payload_digest(model, version - 1):
                raise VerificationError("chain", f"parent digest does not match v{version - 1}'s record")
            if chain:
                for v in range(1, version):
                    env = (self.path(model, v) / ENVELOPE).read_bytes()
                    try:
                        st, _ = open_envelope(env, trusted)
                    except VerificationError as exc:
                        raise VerificationError("chain", f"ancestor v{v}: {exc}") from None
                    want = None if v == 1 else self._payload_digest(model, v - 1)
                    if st.get("predicate", {}).get("parent") != want:
                        raise VerificationError("chain", f"ancestor v{v} breaks the hash chain")
        try:
            graph = loads_model(blobs[MODEL].decode("utf-8"), source=str(folder / MODEL))
            weights = dict(load(blobs[WEIGHTS]))
        except (ModelFileError, ValueError, UnicodeDecodeError) as exc:
            raise VerificationError("record", f"unreadable model or weights: {exc}") from None
        if record.get("graph_hash") != graph.canonical_hash():
            raise VerificationError("record", "graph hash in the record does not match model.toml")
        if check_certificate:
            cert = record.get("certificate")
            if not cert:
                raise VerificationError("certificate", "the record carries no certificate")
            try:
                budget = int(cert.get("memory_budget", record.get("memory_budget", 1 << 30)))
                _check_cert(cert, graph, weights, memory_budget=budget)
            except (CertificationError, ValueError) as exc:
                raise VerificationError("certificate", str(exc)) from None
        return VerifiedVersion(model=model, version=version, record=record, digest=_sha256(payload),
                               graph=graph, weights=weights, path=folder)

    def verify_all(self, trusted_keys: Iterable[Any], model: str | None = None) -> list[tuple[str, int, str]]:
        """Verify every version (of ``model`` or of all models): ``[(model, version, "ok" | error)]``."""
        keys = list(trusted_keys)
        out = []
        for m in [model] if model else self.models():
            for v in self.versions(m):
                try:
                    self.verify(m, v, keys, chain=False)
                    out.append((m, v, "ok"))
                except RegistryError as exc:
                    out.append((m, v, str(exc)))
        return out

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _lock(self, model: str):
        folder = self.root / model
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield folder
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def publish(self, graph, weights_file: str | Path | bytes, private_key, *, metrics: Mapping[str, Any]
                | None = None, training: Mapping[str, Any] | None = None, dataset: Mapping[str, Any]
                | None = None, certificate: Any = None, memory_budget: int | None = None,
                note: str | None = None, verify: bool = True) -> VerifiedVersion | int:
        """Certify, sign and commit a new version of ``graph.name``; returns it.

        Args:
            graph: the model graph (stored as its canonical model file, ``dump_model``).
            weights_file: a safetensors file (path or bytes), stored byte for byte.
            private_key: Ed25519 private key (object or PEM path).
            metrics: the run's metrics (``metrics.json``; its ``history`` is left out).
            training: training settings (default: the graph's, with the run's seed and epochs).
            dataset: data-set description (default: the graph's ``[data]`` and the sample count).
            certificate: a certificate to embed; default: :func:`neuro.deploy.certify.certify` now.  An
                explicitly passed certificate is embedded as is (the verifier re-checks it).
            memory_budget: budget of the certificate's memory check, bytes.
            note: free text stored in the record.
            verify: verify the committed version and return it as :class:`VerifiedVersion`
                (``False``: return only the new version number).
        Raises:
            CertificationError: when a check fails (nothing is written).
        """
        from safetensors.torch import load

        from neuro.deploy.certify import DEFAULT_MEMORY_BUDGET, Certificate, certify
        from neuro.model.spec import dump_model

        if isinstance(private_key, str | Path):
            private_key = load_private_key(private_key)
        weights_bytes = weights_file if isinstance(weights_file, bytes) else Path(weights_file).read_bytes()
        model_bytes = dump_model(graph).encode("utf-8")
        budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
        if certificate is None:
            certificate = certify(graph, dict(load(weights_bytes)), memory_budget=budget)
        cert = certificate.to_dict() if isinstance(certificate, Certificate) else dict(certificate)
        cert["memory_budget"] = budget
        metrics = {k: v for k, v in dict(metrics or {}).items() if k != "history"}
        if training is None:
            training = graph.training.to_dict()
            for k in ("seed", "epochs", "lr_schedule", "workers", "train_samples"):
                if k in metrics:
                    training[k] = metrics[k]
        if dataset is None:
            dataset = {"data": None if graph.data is None else graph.data.to_dict(),
                       "encodings": {n: e.to_dict() for n, e in graph.encodings.items()},
                       "train_samples": metrics.get("train_samples")}
        formats = {n: p.format for n, p in graph.projections.items()}
        kid = key_id(private_key.public_key())
        with self._lock(graph.name) as folder:
            for stale in folder.glob(".staging-*"):  # leftovers of a crashed writer
                shutil.rmtree(stale, ignore_errors=True)
            version = (self.latest(graph.name) or 0) + 1
            parent = None if version == 1 else self._payload_digest(graph.name, version - 1)
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            record = {
                "model": graph.name, "version": version, "parent": parent,
                "graph_hash": graph.canonical_hash(), "files": {WEIGHTS: _sha256(weights_bytes),
                                                               MODEL: _sha256(model_bytes)},
                "training": dict(training), "dataset": dict(dataset), "formats": formats,
                "metrics": metrics, "certificate": cert, "memory_budget": budget,
                "created": now, "signed": now, "key_id": kid, "tool": "neuro", "tool_version": __version__,
                "note": note,
            }
            statement = {
                "_type": STATEMENT_TYPE,
                "subject": [{"name": WEIGHTS, "digest": {"sha256": _sha256(weights_bytes)}},
                            {"name": MODEL, "digest": {"sha256": _sha256(model_bytes)}}],
                "predicateType": PREDICATE_TYPE,
                "predicate": record,
            }
            envelope = canonical_json(sign_statement(statement, private_key)) + b"\n"
            staging = folder / f".staging-{os.getpid()}-{secrets.token_hex(4)}"
            staging.mkdir()
            _crash_point("staging-created")
            _write_file(staging / WEIGHTS, weights_bytes, crash="mid-weights")
            _crash_point("after-weights")
            _write_file(staging / MODEL, model_bytes)
            _write_file(staging / ENVELOPE, envelope, crash="mid-envelope")
            _fsync_dir(staging)
            _crash_point("before-rename")
            final = folder / _version_dir(version)
            os.rename(staging, final)  # the commit point
            _crash_point("after-rename")
            _fsync_dir(folder)
        if not verify:
            return version
        return self.verify(graph.name, version, [private_key.public_key()], chain=False)

    def publish_run(self, run_dir: str | Path, private_key, **kwargs: Any) -> VerifiedVersion:
        """Publish a ``neuro train`` output folder (``model.toml``, ``weights.safetensors``,
        ``metrics.json``); keyword arguments go to :meth:`publish`."""
        from neuro.model.spec import load_model

        run_dir = Path(run_dir)
        for name in (MODEL, WEIGHTS, "metrics.json"):
            if not (run_dir / name).is_file():
                raise RegistryError(f"{run_dir}: no {name} (is this a `neuro train` output folder?)")
        graph = load_model(run_dir / MODEL)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        return self.publish(graph, run_dir / WEIGHTS, private_key, metrics=metrics, **kwargs)


# --------------------------------------------------------------------------------------------------
# Command-line entry points (wired by neuro.cli)
# --------------------------------------------------------------------------------------------------


def cli_keygen(private_key: str, public_key: str | None = None) -> int:
    """``neuro keygen PRIVATE.pem [--public PUBLIC.pem]``: make an Ed25519 key pair; prints the key id."""
    try:
        kid = generate_key(private_key, public_key)
    except (RegistryError, OSError) as exc:
        print(f"neuro keygen: {exc}", file=sys.stderr)
        return 2
    print(f"key id {kid}")
    return 0


def cli_sign(registry: str, run: str, key: str, *, memory_budget: int | None = None,
             note: str | None = None) -> int:
    """``neuro sign REGISTRY RUN_DIR --key PRIVATE.pem [--memory-budget BYTES] [--note TEXT]``.

    Certifies the run's weights, signs a new version and commits it; prints ``MODEL vN``.
    Returns 0, 1 when certification fails, 2 on unusable input.
    """
    from neuro.deploy.certify import CertificationError

    try:
        v = Registry(registry).publish_run(run, key, memory_budget=memory_budget, note=note)
    except CertificationError as exc:
        print(f"neuro sign: {exc}", file=sys.stderr)
        return 1
    except (RegistryError, OSError, ValueError) as exc:
        print(f"neuro sign: {exc}", file=sys.stderr)
        return 2
    print(f"{v.model} v{v.version}  digest {v.digest[:16]}  test_accuracy "
          f"{v.record['metrics'].get('test_accuracy', float('nan')):.4f}  -> {v.path}")
    return 0


def cli_verify(registry: str, keys: list[str], model: str | None = None, version: int | None = None) -> int:
    """``neuro verify REGISTRY --key PUBLIC.pem [--key ...] [--model NAME] [--version N]``.

    Verifies one version (with ``--version``) or every version; prints one line each.  Returns 0 if
    all verify, 1 otherwise.
    """
    reg = Registry(registry)
    if version is not None and model is None:
        print("neuro verify: --version needs --model", file=sys.stderr)
        return 2
    try:
        if version is not None:
            v = reg.verify(model, version, keys)
            results = [(v.model, v.version, "ok")]
        else:
            results = reg.verify_all(keys, model)
    except (RegistryError, OSError) as exc:
        print(f"neuro verify: {exc}", file=sys.stderr)
        return 1
    if not results:
        print(f"neuro verify: no versions in {registry}", file=sys.stderr)
        return 1
    for m, v, status in results:
        print(f"{m} v{v}: {status}")
    return 0 if all(s == "ok" for _, _, s in results) else 1


def cli_versions(registry: str, model: str | None = None) -> int:
    """``neuro versions REGISTRY [--model NAME]``: one line per version (unverified listing)."""
    reg = Registry(registry)
    models = [model] if model else reg.models()
    if not models or not any(reg.versions(m) for m in models):
        print(f"neuro versions: no versions in {registry}", file=sys.stderr)
        return 1
    print(f"{'model':<20} {'ver':>4} {'created':<21} {'test_acc':>8} {'formats':<12} {'key':<12} parent")
    for m in models:
        for v in reg.versions(m):
            try:
                r = reg.read_record(m, v)
            except (OSError, ValueError, KeyError) as exc:
                print(f"{m:<20} {v:>4} unreadable record: {exc}")
                continue
            acc = r.get("metrics", {}).get("test_accuracy")
            fmts = ",".join(sorted(set(r.get("formats", {}).values())))
            acc_text = "-" if acc is None else format(acc, ".4f")
            print(f"{m:<20} {v:>4} {r.get('created', '?'):<21} {acc_text:>8} {fmts:<12} "
                  f"{r.get('key_id', '?')[:12]:<12} {(r.get('parent') or '-')[:16]}")
    return 0
