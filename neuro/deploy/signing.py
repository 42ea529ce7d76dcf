"""Keys, canonical encoding and DSSE envelopes: what a signed version record is made of.

A version record is an in-toto Statement encoded canonically (:func:`canonical_json`: sorted keys,
compact separators, ASCII) and signed with Ed25519 over the DSSE pre-authentication encoding
``PAE(payloadType, payload)`` (:func:`pae`, :func:`sign_statement`).  :func:`open_envelope` checks
an envelope's canonical encoding and its signature by a trusted key.

Keys: :func:`generate_key` writes an Ed25519 private key (PEM, PKCS8, file mode 0600) and its public
key (PEM); the key id is the sha256 of the raw 32-byte public key (:func:`key_id`).  Verification
only trusts the public keys it is given (:func:`keyring`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from neuro.training.outputs import atomic_write

__all__ = [
    "PAYLOAD_TYPE",
    "RegistryError",
    "VerificationError",
    "canonical_json",
    "generate_key",
    "key_id",
    "keyring",
    "load_private_key",
    "load_public_key",
    "open_envelope",
    "pae",
    "sign_statement",
]

PAYLOAD_TYPE = "application/vnd.in-toto+json"


class RegistryError(RuntimeError):
    """A registry operation failed (unknown model or version, unreadable folder, bad input)."""


class VerificationError(RegistryError):
    """A version does not verify; ``check`` names what failed (``signature``, ``hash:FILE``,
    ``chain``, ``certificate``, ``record``, ``envelope``), ``detail`` says how."""

    def __init__(self, check: str, message: str) -> None:
        self.check, self.detail = check, message
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
    atomic_write(public_path, public_pem)
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


def keyring(keys: Iterable[Any]) -> dict[str, Any]:
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
