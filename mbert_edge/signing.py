"""Detached Ed25519 signatures of a bundle's manifest (``manifest.sig``).

A checksum proves that the files match the manifest; a signature proves who wrote the manifest. Since the
manifest pins every file's size and SHA-256, a valid signature followed by checksum verification of the
files proves the whole bundle came from the holder of the private key.

``manifest.sig`` is a small UTF-8 JSON object beside ``manifest.json`` (see ``docs/bundle-format.md``)::

    {"format": "mbert-edge-signature", "version": 1, "algorithm": "ed25519",
     "key_id": "<sha256 hex of the 32-byte public key>", "manifest_sha256": "<sha256 hex of manifest.json>",
     "signed_at": "2026-05-01T12:00:00Z", "release": 7, "signature": "<base64, 64 bytes>"}

The Ed25519 signature covers the *statement* below (ASCII, every line ends with ``\\n``), so the key id, the
manifest's hash, the time and the release number are all signed; the manifest is bound through its hash::

    mbert-edge-signature v1
    algorithm: ed25519
    key_id: <key_id>
    manifest_sha256: <manifest_sha256>
    signed_at: <signed_at>
    release: <release, or "none">

Keys are PEM files: the private key PKCS#8 (optionally encrypted with a passphrase), the public key
SubjectPublicKeyInfo, both readable by OpenSSL. ``cryptography`` (the ``sign`` extra) is imported only when a
key is generated, a bundle signed or a signature verified; reading a signature's header needs nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from mbert_edge.errors import (
    BundleFormatError,
    BundleNotFoundError,
    BundleSignatureError,
    SigningError,
    SigningUnavailableError,
)
from mbert_edge.manifest import MANIFEST_NAME, Manifest

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from mbert_edge.bundle import Bundle

log = logging.getLogger(__name__)

SIGNATURE_NAME = "manifest.sig"
SIGNATURE_FORMAT = "mbert-edge-signature"
SIGNATURE_VERSION = 1
ALGORITHM = "ed25519"

#: default file names of ``mbert-edge keygen -o KEYDIR``
PRIVATE_KEY_NAME = "private.pem"
PUBLIC_KEY_NAME = "public.pem"

_MAX_SIGNATURE_BYTES = 64 * 1024  # a real manifest.sig is ~400 bytes; anything this large is not one
_MAX_KEY_BYTES = 64 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SIGNED_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_INSTALL_HINT = "pip install 'mbert-edge[sign]'"

#: one public key: a path to a key file, PEM text or bytes, the raw 32 bytes, their base64 text, or a
#: ``cryptography`` ``Ed25519PublicKey``
PublicKeySource: TypeAlias = "str | bytes | os.PathLike[str] | Ed25519PublicKey"
#: one public key, or a list/tuple of keys (any of them may have signed the bundle: key rotation)
PublicKeys: TypeAlias = "PublicKeySource | Sequence[PublicKeySource]"


@dataclass(frozen=True)
class KeyPair:
    """What :func:`generate_keypair` wrote."""

    private_path: Path
    public_path: Path
    key_id: str  #: SHA-256 hex of the raw 32-byte public key
    public_key_base64: str  #: the raw 32-byte public key in base64, to embed in an app as a constant


@dataclass(frozen=True)
class BundleSignature:
    """The header of a bundle's ``manifest.sig``; verified only when returned by a ``verify_*`` function."""

    path: Path  #: the ``manifest.sig`` file
    key_id: str
    manifest_sha256: str
    signed_at: str
    release: int | None
    signature: bytes = field(repr=False)
    #: the exact ``manifest.json`` bytes whose signature was verified (``None`` when not verified)
    verified_manifest: bytes | None = field(default=None, repr=False)

    @property
    def short_key_id(self) -> str:
        """The key id as shown in messages (first 16 hex digits)."""
        return self.key_id[:16]

    def check_manifest(self, manifest: Manifest) -> None:
        """Raise unless ``manifest`` (as parsed by whoever opens the bundle) is the manifest that was verified.

        Closes the window between verifying ``manifest.json`` and a second read of it: a manifest swapped in
        between is refused instead of trusted.
        """
        if self.verified_manifest is None:
            raise BundleSignatureError("this signature was read but not verified; call verify_signature() first")
        try:
            verified = Manifest.from_dict(json.loads(self.verified_manifest))
        except (ValueError, BundleFormatError) as exc:
            raise BundleSignatureError(f"the signed {MANIFEST_NAME} is not a valid manifest: {exc}") from exc
        if verified != manifest:
            raise BundleSignatureError(
                f"{self.path.parent / MANIFEST_NAME} changed while the bundle was being opened, after its "
                "signature was verified; refusing it"
            )


def statement(key_id: str, manifest_sha256: str, signed_at: str, release: int | None) -> bytes:
    """The exact bytes an Ed25519 signature of format v1 covers (documented in ``docs/bundle-format.md``).

    Public so that a signer outside this module (an HSM, a cloud KMS) can sign the same bytes.
    """
    if not (_HEX64.fullmatch(key_id) and _HEX64.fullmatch(manifest_sha256) and _SIGNED_AT.fullmatch(signed_at)):
        raise SigningError(
            "key_id and manifest_sha256 must be 64 lowercase hex digits, signed_at like 2026-05-01T12:00:00Z"
        )
    if release is not None and (not isinstance(release, int) or isinstance(release, bool) or release < 0):
        raise SigningError(f"release must be a non-negative integer or None, not {release!r}")
    return (
        f"{SIGNATURE_FORMAT} v{SIGNATURE_VERSION}\n"
        f"algorithm: {ALGORITHM}\n"
        f"key_id: {key_id}\n"
        f"manifest_sha256: {manifest_sha256}\n"
        f"signed_at: {signed_at}\n"
        f"release: {'none' if release is None else release}\n"
    ).encode("ascii")


# --------------------------------------------------------------------------------------------------- keys
def generate_keypair(
    private_path: str | os.PathLike[str],
    public_path: str | os.PathLike[str],
    *,
    passphrase: str | bytes | None = None,
    force: bool = False,
) -> KeyPair:
    """Create an Ed25519 key pair as PEM files and return what was written.

    The private key file is created with mode 0600 (owner read/write only), encrypted when ``passphrase`` is
    given. Existing files are never overwritten unless ``force`` is true: a lost private key cannot sign
    updates that devices holding the old public key accept.
    """
    crypto = _crypto()
    private_path, public_path = Path(private_path), Path(public_path)
    if private_path.resolve() == public_path.resolve():
        raise SigningError("the private and the public key need two different paths")
    if not force:
        for p in (private_path, public_path):
            if p.exists() or p.is_symlink():
                raise SigningError(
                    f"{p} already exists; refusing to overwrite a key (bundles signed with the old key would no "
                    "longer verify with the new public key). Choose other paths, or pass --force / force=True"
                )
    key = crypto.ed25519.Ed25519PrivateKey.generate()
    encryption = (
        crypto.serialization.BestAvailableEncryption(_as_bytes(passphrase))
        if passphrase
        else crypto.serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        crypto.serialization.Encoding.PEM, crypto.serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = key.public_key().public_bytes(
        crypto.serialization.Encoding.PEM, crypto.serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_file(private_path, private_pem, mode=0o600, force=force)
    _write_file(public_path, public_pem, mode=0o644, force=force)
    raw = _raw_public(key.public_key())
    pair = KeyPair(private_path, public_path, _key_id(raw), base64.b64encode(raw).decode("ascii"))
    log.info("wrote Ed25519 key %s: private %s, public %s", pair.key_id[:16], private_path, public_path)
    return pair


def key_id(public_key: PublicKeySource) -> str:
    """SHA-256 hex of the raw 32-byte Ed25519 public key (what ``manifest.sig`` names as ``key_id``)."""
    return _key_id(_raw_public(_load_public_key(public_key)))


def public_key_base64(public_key: PublicKeySource) -> str:
    """The raw 32-byte public key as base64 text: the compact form to embed in an app."""
    return base64.b64encode(_raw_public(_load_public_key(public_key))).decode("ascii")


# ---------------------------------------------------------------------------------------------- signing
def sign_bundle(
    bundle_path: str | os.PathLike[str],
    private_key_path: str | os.PathLike[str],
    *,
    passphrase: str | bytes | None = None,
    release: int | None = None,
) -> Path:
    """Sign the bundle's ``manifest.json`` with the private key and write ``manifest.sig``; return its path.

    Every file is verified against the manifest first (a broken bundle is never signed). ``release`` is an
    optional non-negative integer that the signature covers, for downgrade protection
    (:func:`verify_bundle`'s ``min_release``). An existing ``manifest.sig`` is replaced.
    """
    from mbert_edge.bundle import Bundle

    if release is not None and (not isinstance(release, int) or isinstance(release, bool) or release < 0):
        raise SigningError(f"release must be a non-negative integer, not {release!r}")
    key = _load_private_key(Path(private_key_path), passphrase)
    root = Path(bundle_path)
    manifest_bytes = _read_manifest_bytes(root)
    bundle = Bundle.open(root, verify=True)  # every file hashed: sign only what is intact
    if Manifest.from_dict(json.loads(manifest_bytes)) != bundle.manifest:
        raise SigningError(f"{root / MANIFEST_NAME} changed while it was being signed; sign again")
    kid = _key_id(_raw_public(key.public_key()))
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    signed_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    signature = key.sign(statement(kid, digest, signed_at, release))
    doc = {
        "format": SIGNATURE_FORMAT,
        "version": SIGNATURE_VERSION,
        "algorithm": ALGORITHM,
        "key_id": kid,
        "manifest_sha256": digest,
        "signed_at": signed_at,
        "release": release,
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    out = root / SIGNATURE_NAME
    _write_file(out, (json.dumps(doc, indent=2) + "\n").encode("ascii"), mode=0o644, force=True)
    log.info("signed %s with key %s (release %s)", root, kid[:16], release)
    return out


# ----------------------------------------------------------------------------------------- verification
def read_signature(bundle_path: str | os.PathLike[str]) -> BundleSignature:
    """Parse the bundle's ``manifest.sig`` without verifying it (needs no ``cryptography``).

    Raises :class:`BundleSignatureError` when the bundle is unsigned or the file is malformed.
    """
    root = Path(bundle_path)
    path = root / SIGNATURE_NAME
    if not path.is_file():
        raise BundleSignatureError(
            f"bundle {root} is not signed (no {SIGNATURE_NAME}); sign it with "
            f"`mbert-edge sign {root} --key PRIVATE_KEY`, or load it without a public key"
        )
    with open(path, "rb") as f:
        data = f.read(_MAX_SIGNATURE_BYTES + 1)
    if len(data) > _MAX_SIGNATURE_BYTES:
        raise _malformed(path, f"it is larger than {_MAX_SIGNATURE_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, absurd numbers or nesting
        raise _malformed(path, "it is not UTF-8 JSON") from exc
    if not isinstance(doc, dict) or doc.get("format") != SIGNATURE_FORMAT:
        raise _malformed(path, f"it is not an object with format {SIGNATURE_FORMAT!r}")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _malformed(path, "it has no valid 'version'")
    if version > SIGNATURE_VERSION:
        raise BundleSignatureError(
            f"{path} has signature format {version}, newer than this mbert-edge understands (up to "
            f"{SIGNATURE_VERSION}); upgrade with `pip install -U mbert-edge`"
        )
    if doc.get("algorithm") != ALGORITHM:
        raise _malformed(path, f"algorithm {doc.get('algorithm')!r} is not {ALGORITHM!r}")
    kid, digest, signed_at = doc.get("key_id"), doc.get("manifest_sha256"), doc.get("signed_at")
    if not isinstance(kid, str) or not _HEX64.fullmatch(kid):
        raise _malformed(path, "'key_id' is not 64 lowercase hex digits")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise _malformed(path, "'manifest_sha256' is not 64 lowercase hex digits")
    if not isinstance(signed_at, str) or not _SIGNED_AT.fullmatch(signed_at):
        raise _malformed(path, "'signed_at' is not a UTC time like 2026-05-01T12:00:00Z")
    release = doc.get("release")
    if release is not None and (not isinstance(release, int) or isinstance(release, bool) or release < 0):
        raise _malformed(path, "'release' is not a non-negative integer or null")
    try:
        encoded = doc.get("signature")
        if not isinstance(encoded, str):
            raise ValueError("not a string")
        signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _malformed(path, "'signature' is not base64") from exc
    if len(signature) != 64:
        raise _malformed(path, f"'signature' holds {len(signature)} bytes, an Ed25519 signature 64")
    return BundleSignature(path, kid, digest, signed_at, release, signature)


def verify_signature(bundle_path: str | os.PathLike[str], public_key: PublicKeys) -> BundleSignature:
    """Verify ``manifest.sig`` against ``manifest.json`` and the trusted key(s); read no other file.

    This proves the manifest only. The files must then be checked against it (``Bundle.open(verify=True)``,
    or ``load``, which hashes every file it reads), and the manifest that gets parsed must be this one
    (:meth:`BundleSignature.check_manifest`); :func:`verify_bundle` does all of that.

    Raises :class:`BundleSignatureError` for an unsigned bundle, a malformed ``manifest.sig``, a signature
    by another key (naming both key ids), or a manifest changed after signing.
    """
    crypto = _crypto()
    keys = _load_public_keys(public_key)
    root = Path(bundle_path)
    manifest_bytes = _read_manifest_bytes(root)
    sig = read_signature(root)
    key = keys.get(sig.key_id)
    if key is None:
        given = ", ".join(k[:16] for k in keys)
        raise BundleSignatureError(
            f"bundle {root} is signed by key {sig.short_key_id}, not by the "
            f"{'key' if len(keys) == 1 else 'keys'} given ({given}); use the public key it was signed with, or "
            "re-sign the bundle with a trusted key"
        )
    try:
        key.verify(sig.signature, statement(sig.key_id, sig.manifest_sha256, sig.signed_at, sig.release))
    except crypto.InvalidSignature:
        raise BundleSignatureError(
            f"{sig.path} does not verify with key {sig.short_key_id}: the signature file was altered or forged; "
            "refusing the bundle (get a correctly signed copy)"
        ) from None
    digest = hashlib.sha256(manifest_bytes).hexdigest()
    if digest != sig.manifest_sha256:
        raise BundleSignatureError(
            f"{root / MANIFEST_NAME} changed after it was signed (sha256 {digest[:12]}…, signed "
            f"{sig.manifest_sha256[:12]}…); refusing the bundle (get a correctly signed copy, or re-sign it)"
        )
    log.debug("signature of %s verified: key %s, release %s", root, sig.short_key_id, sig.release)
    return BundleSignature(
        sig.path, sig.key_id, sig.manifest_sha256, sig.signed_at, sig.release, sig.signature, manifest_bytes
    )


def verify_bundle(
    bundle_path: str | os.PathLike[str], public_key: PublicKeys, *, min_release: int | None = None
) -> BundleSignature:
    """Verify a signed bundle completely: signature, then every file's size and SHA-256 against the manifest.

    Use it before swapping a downloaded bundle in. ``min_release`` refuses a bundle whose signed release
    number is lower (or absent): downgrade protection, when the app remembers the release it runs.
    Raises :class:`BundleSignatureError` or another :class:`~mbert_edge.errors.BundleError`.
    """
    return open_signed(bundle_path, public_key, min_release=min_release)[1]


def open_signed(
    bundle_path: str | os.PathLike[str], public_key: PublicKeys, *, min_release: int | None = None
) -> tuple[Bundle, BundleSignature]:
    """:func:`verify_bundle`, returning the opened (fully hashed) :class:`~mbert_edge.bundle.Bundle` too."""
    from mbert_edge.bundle import Bundle

    sig = verify_signature(bundle_path, public_key)
    if min_release is not None and (sig.release is None or sig.release < min_release):
        raise BundleSignatureError(
            f"bundle {bundle_path} is release {sig.release if sig.release is not None else '(none)'}, older than "
            f"the minimum {min_release}: refusing a downgrade"
        )
    bundle = Bundle.open(bundle_path, verify=True)
    sig.check_manifest(bundle.manifest)
    return bundle, sig


# -------------------------------------------------------------------------------------------- internals
class _Crypto:
    """The parts of ``cryptography`` this module uses, imported on first need."""

    def __init__(self) -> None:
        from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        self.InvalidSignature = InvalidSignature
        self.UnsupportedAlgorithm = UnsupportedAlgorithm
        self.serialization = serialization
        self.ed25519 = ed25519


def _crypto() -> _Crypto:
    try:
        return _Crypto()
    except ImportError as exc:
        raise SigningUnavailableError(
            f"signing and signature verification need the 'cryptography' package ({exc}); install it with "
            f"{_INSTALL_HINT}"
        ) from exc


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()


def _raw_public(key: Any) -> bytes:
    s = _crypto().serialization
    return key.public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)


def _load_private_key(path: Path, passphrase: str | bytes | None) -> Any:
    crypto = _crypto()
    if not path.is_file():
        raise SigningError(f"no private key at {path}; create one with `mbert-edge keygen -o KEYDIR`")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        mode = stat.S_IMODE(path.stat().st_mode)
        log.warning("private key %s is readable by other users (mode %03o); chmod 600 it", path, mode)
    data = path.read_bytes()[: _MAX_KEY_BYTES + 1]
    try:
        key = crypto.serialization.load_pem_private_key(data, _as_bytes(passphrase) if passphrase else None)
    except TypeError as exc:  # a passphrase is missing, or given for an unencrypted key
        hint = "pass its passphrase" if not passphrase else "it is not encrypted: give no passphrase"
        raise SigningError(f"cannot read private key {path}: {exc}; {hint}") from exc
    except (ValueError, crypto.UnsupportedAlgorithm) as exc:
        raise SigningError(
            f"cannot read private key {path}: not a PEM private key, or a wrong passphrase ({exc})"
        ) from exc
    if not isinstance(key, crypto.ed25519.Ed25519PrivateKey):
        raise SigningError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key; use `mbert-edge keygen`")
    return key


def _load_public_keys(public_key: PublicKeys) -> dict[str, Any]:
    """Trusted keys by key id; ``public_key`` is one key or a list/tuple of keys."""
    items = list(public_key) if isinstance(public_key, (list, tuple)) else [public_key]
    if not items:
        raise SigningError("no public key given")
    keys = {}
    for item in items:
        key = _load_public_key(item)
        keys[_key_id(_raw_public(key))] = key
    return keys


def _load_public_key(source: PublicKeySource) -> Any:
    """One Ed25519 public key from a key object, PEM, raw or base64 bytes/text, or a file path.

    A ``str`` is taken as PEM text, then as base64 of the raw key, and only then as a path (so a key given as a
    constant is never replaced by a file that happens to carry its text as name).
    """
    crypto = _crypto()
    if isinstance(source, crypto.ed25519.Ed25519PublicKey):
        return source
    if isinstance(source, crypto.ed25519.Ed25519PrivateKey):
        raise SigningError("a private key was given where the public key is expected; pass its public key")
    if isinstance(source, str):
        text = source.strip()
        if text.startswith("-----BEGIN"):
            return _parse_public_bytes(text.encode("ascii", "replace"), "the public key text")
        raw = _b64_key(text)
        if raw is not None:
            return crypto.ed25519.Ed25519PublicKey.from_public_bytes(raw)
        source = Path(source)
    if isinstance(source, os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise SigningError(
                f"public key {str(path)!r} is not a file, PEM text or base64 of a 32-byte Ed25519 key; "
                "create keys with `mbert-edge keygen`"
            )
        with open(path, "rb") as f:
            return _parse_public_bytes(f.read(_MAX_KEY_BYTES + 1), str(path))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _parse_public_bytes(bytes(source), "the public key bytes")
    raise SigningError(f"cannot use a {type(source).__name__} as a public key; give a path, PEM, or raw key bytes")


def _parse_public_bytes(data: bytes, what: str) -> Any:
    crypto = _crypto()
    if len(data) == 32 and not data.strip().startswith(b"-----BEGIN"):
        return crypto.ed25519.Ed25519PublicKey.from_public_bytes(data)
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        if b"PRIVATE KEY" in stripped.split(b"\n", 1)[0]:
            raise SigningError(f"{what} is a private key; give the public key (never ship a private key)")
        try:
            key = crypto.serialization.load_pem_public_key(stripped)
        except (ValueError, crypto.UnsupportedAlgorithm) as exc:
            raise SigningError(f"{what} is not a valid PEM public key ({exc})") from exc
        if not isinstance(key, crypto.ed25519.Ed25519PublicKey):
            raise SigningError(f"{what} is a {type(key).__name__}, not an Ed25519 public key")
        return key
    try:
        raw = _b64_key(stripped.decode("ascii"))
    except UnicodeDecodeError:
        raw = None
    if raw is None:
        raise SigningError(f"{what} is neither a PEM public key, 32 raw bytes, nor base64 of 32 bytes")
    return crypto.ed25519.Ed25519PublicKey.from_public_bytes(raw)


def _b64_key(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def _read_manifest_bytes(root: Path) -> bytes:
    if not root.is_dir():
        raise BundleNotFoundError(
            f"no bundle directory at {root}; create one with `mbert-edge export SOURCE -o {root}`"
        )
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise BundleNotFoundError(f"{root} has no {MANIFEST_NAME}, so it is not an mbert-edge bundle; re-export it")
    return path.read_bytes()


def _malformed(path: Path, why: str) -> BundleSignatureError:
    return BundleSignatureError(
        f"{path} is malformed: {why}; refusing the bundle (sign it again with `mbert-edge sign`)"
    )


def _write_file(path: Path, data: bytes, *, mode: int, force: bool) -> None:
    """Write ``data`` with ``mode``: a new file exclusively, or (``force``) atomically through a temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not force:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # never follows or replaces a file
        except FileExistsError as exc:
            raise SigningError(f"{path} already exists; refusing to overwrite it") from exc
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)  # exact mode whatever the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # created 0600
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
