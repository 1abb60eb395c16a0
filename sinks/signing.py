"""Ed25519 signing of trail checkpoints.

A checkpoint says "trail T had head (seq, hash) at time t" and is signed with
an Ed25519 key that lives outside the database (`trail.signing_key`). Someone
who rewrites the whole database (a fresh, internally consistent hash chain)
cannot produce signatures for it without that key, so `verify` notices.

The key file is a PEM PKCS#8 private key, unencrypted, mode 0600, created
atomically on first use; a key that is a symlink, belongs to another user or
is accessible to group or others is refused (`check_key_file`). Auditors get
the public half (`export_public_key`) and can verify a copy of the database
without the private key.

`checkpoint_payload` is the one definition of the signed bytes: every signer
and verifier goes through it. A checkpoint covers two chains, the events and
the alerts, so the payload names both heads:

- ``v2`` (``docktrail-checkpoint-v2\n`` + canonical JSON of ``alerts_hash``,
  ``alerts_seq``, ``hash``, ``seq``, ``time_ns``, ``trail_id``) when the
  trail had alerts;
- ``v1`` (``docktrail-checkpoint-v1\n`` + canonical JSON of ``hash``, ``seq``,
  ``time_ns``, ``trail_id``) when it had none, i.e. the alerts head was
  (0, genesis hash). Checkpoints made before alerts existed (the database
  migration gives their new columns exactly those defaults) therefore verify
  unchanged, and a v1 signature can only ever vouch for "no alerts".
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from config.errors import SigningKeyError
from listener.model.event import GENESIS_HASH, canonical_json

PAYLOAD_DOMAIN = b"docktrail-checkpoint-v1\n"
"""Prefix of every signed payload, so a checkpoint signature can never be
mistaken for a signature over anything else made with the same key."""
PAYLOAD_DOMAIN_V2 = b"docktrail-checkpoint-v2\n"
"""Prefix of payloads that name an alerts head (see the module docstring)."""
HEAD_DOMAIN = b"docktrail-head-v1\n"
"""Prefix of head seals (`head_payload`)."""


def checkpoint_payload(
    trail_id: str,
    seq: int,
    hash: str,
    time_ns: int,
    alerts_seq: int = 0,
    alerts_hash: str = GENESIS_HASH,
) -> bytes:
    """The exact bytes a checkpoint signature covers: both chain heads at `time_ns`."""
    content: dict[str, object] = {"hash": hash, "seq": seq, "time_ns": time_ns}
    content["trail_id"] = trail_id
    if alerts_seq == 0 and alerts_hash == GENESIS_HASH:
        return PAYLOAD_DOMAIN + canonical_json(content).encode()
    content["alerts_seq"], content["alerts_hash"] = alerts_seq, alerts_hash
    return PAYLOAD_DOMAIN_V2 + canonical_json(content).encode()


def head_payload(
    trail_id: str, seq: int, hash: str, alerts_seq: int, alerts_hash: str, time_ns: int
) -> bytes:
    """The bytes a head seal signs: both heads as the writer left them at `time_ns`.

    Its own domain, so a head seal can never pass for a checkpoint or the reverse.
    """
    content: dict[str, object] = {"alerts_hash": alerts_hash, "alerts_seq": alerts_seq}
    content.update(hash=hash, seq=seq, time_ns=time_ns, trail_id=trail_id)
    return HEAD_DOMAIN + canonical_json(content).encode()


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The private key at `path`, created (0600, parents too) when absent.

    Creation is atomic: the key is written to a temporary file in the same
    directory and linked into place, which never replaces an existing file, so
    a reader sees no key or the whole key, and of two racing creators exactly
    one wins while the other loads the winner's key.
    """
    if os.path.lexists(path):
        return _load_private(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_new(path, pem)
    except FileExistsError:
        return _load_private(path)
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot create signing key: {exc.strerror}") from exc
    return key


def _write_new(path: Path, data: bytes) -> None:
    """Write `data` to `path` (0600), which must not exist, all or nothing."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.link(temporary, path)  # unlike rename, never replaces a key that won a race
    finally:
        os.unlink(temporary)


def check_key_file(path: Path) -> None:
    """Refuse a private key file an attacker could have planted, swapped or read.

    A symlink (it could point anywhere), a file owned by another user, or one
    readable or writable by group or others is refused: whoever can read the
    key can sign a forged trail, and whoever could write it could have replaced it.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError as exc:
        raise SigningKeyError(f"{path}: key file not found") from exc
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read key file: {exc.strerror}") from exc
    if stat.S_ISLNK(info.st_mode):
        raise SigningKeyError(f"{path}: the signing key is a symlink; refusing to follow it")
    if not stat.S_ISREG(info.st_mode):
        raise SigningKeyError(f"{path}: the signing key is not a regular file")
    if info.st_uid != os.geteuid():
        raise SigningKeyError(
            f"{path}: the signing key belongs to uid {info.st_uid}, not to this user "
            f"(uid {os.geteuid()}); refusing it"
        )
    if info.st_mode & 0o077:
        raise SigningKeyError(
            f"{path}: the signing key is accessible to group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); `chmod 600` it, after making sure "
            "nobody else copied it"
        )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The private key at `path`; never creates one."""
    return _load_private(path)


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The public key in `path`, which may hold a private or a public PEM key."""
    data = _read(path)
    if b"PRIVATE KEY" in data:
        return _parse_private(path, data).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{path}: not a PEM Ed25519 key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path}: a {type(key).__name__}; docktrail signs with Ed25519")
    return key


def export_public_key(private_path: Path) -> str:
    """PEM text of the public half of the key at `private_path`, for auditors."""
    public = load_public_key(private_path)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """Short id of a public key: the first 16 hex digits of sha256(raw key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, payload: bytes) -> str:
    """Hex signature of `payload`."""
    return key.sign(payload).hex()


def verify_signature(public: Ed25519PublicKey, payload: bytes, signature: str) -> bool:
    """Whether `signature` (hex) is `public`'s signature of `payload`."""
    try:
        public.verify(bytes.fromhex(signature), payload)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise SigningKeyError(f"{path}: key file not found") from exc
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read key file: {exc.strerror}") from exc


def _load_private(path: Path) -> Ed25519PrivateKey:
    check_key_file(path)
    return _parse_private(path, _read(path))


def _parse_private(path: Path, data: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # raised for password-protected keys
        raise SigningKeyError(f"{path}: encrypted key; docktrail needs an unencrypted one") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{path}: not a PEM Ed25519 private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: a {type(key).__name__}; docktrail signs with Ed25519")
    return key


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement of both heads at time_ns: (seq, hash), (alerts_seq, alerts_hash)."""

    number: int
    trail_id: str
    seq: int
    hash: str
    time_ns: int
    key_fingerprint: str
    signature: str
    alerts_seq: int = 0
    alerts_hash: str = GENESIS_HASH
