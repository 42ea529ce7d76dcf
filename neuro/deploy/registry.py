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
numeric formats, metrics, the certificate (:mod:`neuro.deploy.certify`), timestamps and the signer's
key id.  It is signed as a DSSE envelope (:mod:`neuro.deploy.signing`); the envelope file is
written canonically too, and verification insists on that encoding, so a change to *any* byte of the
envelope, of a weight file or of the model file is detected.

**Commits are atomic**: a writer takes the model's lock, checks that the newest version (the head)
still verifies (a new version never chains onto a tampered one), writes every file into a staging
folder (each file fsynced), fsyncs the folder, renames it to ``vNNNNNN`` (one atomic ``rename``) and
fsyncs the model folder.  A version exists if and only if its folder has its final name, so a crash
at any point leaves the registry readable and complete up to the last committed version; leftovers
of a crashed writer are staging folders, which readers ignore and the next writer removes.
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
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuro import __version__
from neuro.deploy.signing import (
    RegistryError,
    VerificationError,
    canonical_json,
    generate_key,
    key_id,
    keyring,
    load_private_key,
    open_envelope,
    sign_statement,
)
from neuro.training.outputs import fsync_dir

__all__ = [
    "CRASH_POINTS",
    "ENVELOPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "HeadError",
    "Registry",
    "VerifiedVersion",
    "cli_keygen",
    "cli_sign",
    "cli_verify",
    "cli_versions",
]

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


class HeadError(VerificationError):
    """The registry's newest version of a model (its head) does not verify, so no version may be
    appended on top of it.  ``cause`` is the head's :class:`VerificationError`, ``version`` and
    ``path`` name the head."""

    def __init__(self, model: str, version: int, path: Path, cause: VerificationError) -> None:
        self.model, self.version, self.path, self.cause = model, version, path, cause
        super().__init__("head", f"{model} v{version} ({path}) does not verify "
                         f"[{cause.check}]: {cause.detail}")


# --------------------------------------------------------------------------------------------------
# Staged files (with the crash-test hooks)
# --------------------------------------------------------------------------------------------------


def _crash_point(name: str) -> None:
    """Test hook: SIGKILL this process at ``name`` if NEURO_REGISTRY_CRASH_AT says so."""
    if os.environ.get("NEURO_REGISTRY_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _write_staged(path: Path, data: bytes, crash: str | None = None) -> None:
    """Write ``data`` to a new file in a staging folder and fsync it (in chunks when a crash point
    or the slow-write hook is set)."""
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
    def check_integrity(self, model: str, version: int, trusted_keys: Iterable[Any]
                        ) -> tuple[dict[str, Any], bytes, dict[str, bytes]]:
        """The checks of :meth:`verify` that read only bytes (no model or tensor is built).

        Checks the envelope's canonical encoding and an Ed25519 signature by a trusted key
        (``envelope``/``signature``), the statement layout, model name and version number
        (``record``), the sha256 of every file against the signed subjects (``hash:FILE``) and the
        parent digest against the previous version's signed payload (``chain``).

        Returns:
            ``(record, signed payload, {file name: bytes})``.
        Raises:
            VerificationError: naming the failing check.
        """
        trusted = keyring(trusted_keys)
        if not trusted:
            raise VerificationError("signature", "no trusted public key given")
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
        return record, payload, blobs

    def verify(self, model: str, version: int | None, trusted_keys: Iterable[Any], *,
               check_certificate: bool = True, chain: bool = True) -> VerifiedVersion:
        """Verify one version; returns it loaded, or raises :class:`VerificationError`.

        Checks, in order: everything :meth:`check_integrity` checks; with ``chain``, the previous
        versions' signatures and links (``chain``); the graph hash of ``model.toml`` (``record``);
        the certificate, re-running every check on the stored graph and weights (``certificate``).

        Args:
            model: model name.
            version: version number, or None for the latest.
            trusted_keys: public keys (objects or PEM paths) whose signatures count.
        """
        from neuro.deploy.certify import CertificationError, weights_from_bytes
        from neuro.deploy.certify import check_certificate as recheck
        from neuro.model.spec import loads_model

        keys = list(trusted_keys)
        if version is None:
            version = self.latest(model)
            if version is None:
                raise RegistryError(f"{self.root}: no versions of model {model!r}")
        record, payload, blobs = self.check_integrity(model, version, keys)
        folder = self.path(model, version)
        if chain and version > 1:
            trusted = keyring(keys)
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
            weights = weights_from_bytes(blobs[WEIGHTS])
        except (ValueError, UnicodeDecodeError) as exc:
            raise VerificationError("record", f"unreadable model or weights: {exc}") from None
        if record.get("graph_hash") != graph.canonical_hash():
            raise VerificationError("record", "graph hash in the record does not match model.toml")
        if check_certificate:
            cert = record.get("certificate")
            if not cert:
                raise VerificationError("certificate", "the record carries no certificate")
            try:
                budget = int(cert.get("memory_budget", record.get("memory_budget", 1 << 30)))
                recheck(cert, graph, weights, memory_budget=budget)
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
                note: str | None = None, verify: bool = True, trusted_keys: Iterable[Any] = (),
                check_head: bool = True) -> VerifiedVersion | int:
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
            trusted_keys: public keys besides the signer's own that may have signed the head.
            check_head: refuse to append when the head does not pass :meth:`check_integrity` with
                the signer's key or ``trusted_keys`` (``False``: append anyway, e.g. to build a
                test registry with a bad version in the middle).
        Raises:
            CertificationError: when a check fails (nothing is written).
            HeadError: the head does not verify (nothing is written).
        """
        from neuro.deploy.certify import DEFAULT_MEMORY_BUDGET, Certificate, certify, weights_from_bytes
        from neuro.model.spec import dump_model

        if isinstance(private_key, str | Path):
            private_key = load_private_key(private_key)
        weights_bytes = weights_file if isinstance(weights_file, bytes) else Path(weights_file).read_bytes()
        model_bytes = dump_model(graph).encode("utf-8")
        budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
        if certificate is None:
            certificate = certify(graph, weights_from_bytes(weights_bytes), memory_budget=budget)
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
            head = self.latest(graph.name)
            if check_head and head is not None:
                try:
                    self.check_integrity(graph.name, head, [private_key.public_key(), *trusted_keys])
                except VerificationError as exc:
                    raise HeadError(graph.name, head, self.path(graph.name, head), exc) from None
            version = (head or 0) + 1
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
            _write_staged(staging / WEIGHTS, weights_bytes, crash="mid-weights")
            _crash_point("after-weights")
            _write_staged(staging / MODEL, model_bytes)
            _write_staged(staging / ENVELOPE, envelope, crash="mid-envelope")
            fsync_dir(staging)
            _crash_point("before-rename")
            final = folder / _version_dir(version)
            os.rename(staging, final)  # the commit point
            _crash_point("after-rename")
            fsync_dir(folder)
        if not verify:
            return version
        return self.verify(graph.name, version, [private_key.public_key()], chain=False)

    def publish_run(self, run_dir: str | Path, private_key, **kwargs: Any) -> VerifiedVersion:
        """Publish a complete ``neuro train`` output folder (:func:`neuro.training.outputs.read_run`:
        its manifest and file hashes are checked); keyword arguments go to :meth:`publish`.

        Raises:
            RunFolderError: the folder is incomplete (no ``manifest.json``) or changed since the run.
        """
        from neuro.training.outputs import read_run

        run = read_run(run_dir)
        return self.publish(run.graph, run.weights_bytes, private_key, metrics=run.metrics, **kwargs)


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
             note: str | None = None, trust: list[str] | None = None) -> int:
    """``neuro sign REGISTRY RUN_DIR --key PRIVATE.pem [--trust PUBLIC.pem ...] [--memory-budget BYTES]
    [--note TEXT]``.

    Checks that the run folder is complete and unchanged (its manifest), certifies the run's
    weights, checks that the registry's head verifies (signed by ``key`` or a ``--trust`` key,
    untampered), signs a new version and commits it; prints ``MODEL vN``.  Returns 0, 1 when
    certification fails, 2 on unusable input or a head that does not verify.
    """
    from neuro.deploy.certify import CertificationError

    try:
        v = Registry(registry).publish_run(run, key, memory_budget=memory_budget, note=note,
                                           trusted_keys=list(trust or ()))
    except CertificationError as exc:
        print(f"neuro sign: {exc}", file=sys.stderr)
        return 1
    except HeadError as exc:
        fix = (f"if a key you trust signed v{exc.version}, pass --trust ITS_PUBLIC.pem; otherwise "
               if exc.cause.check == "signature" else "")
        print(f"neuro sign: refusing to sign: the registry's head, {exc.model} v{exc.version}, does not "
              f"verify ([{exc.cause.check}] {exc.cause.detail}), and a new version would chain onto it; "
              f"{fix}restore {exc.path} from a backup or move it out of the registry, then sign again",
              file=sys.stderr)
        return 2
    except (RegistryError, OSError, ValueError) as exc:
        print(f"neuro sign: {exc}", file=sys.stderr)
        return 2
    acc = v.record["metrics"].get("test_accuracy")
    print(f"{v.model} v{v.version}  digest {v.digest[:16]}  test_accuracy "
          f"{'-' if acc is None else format(acc, '.4f')}  -> {v.path}")
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
