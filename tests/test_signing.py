"""Signed bundles: keygen, sign, and load / info refusing unsigned, wrongly signed or changed bundles."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
import subprocess
import sys

import pytest

import mbert_edge
from mbert_edge import signing
from mbert_edge.bundle import Bundle
from mbert_edge.cli import main
from mbert_edge.errors import (
    BundleIntegrityError,
    BundleSignatureError,
    MbertEdgeError,
    SigningError,
    SigningUnavailableError,
)

pytest.importorskip("cryptography")  # the `sign` extra (part of `dev`)

TEXTS = ["Das Essen war großartig!", "The food was awful.", "Еда была нормальной."]


@pytest.fixture
def keys(tmp_path):
    """Two key pairs: the trusted one (``good``) and another (``other``)."""
    return {
        name: signing.generate_keypair(tmp_path / f"{name}.key", tmp_path / f"{name}.pub") for name in ("good", "other")
    }


@pytest.fixture
def signed(copy_bundle, keys):
    b = copy_bundle("text-classification")
    signing.sign_bundle(b, keys["good"].private_path, release=5)
    return b


def _flip_byte(path, where=None):
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if where is None else where
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_sig(bundle, change):
    path = bundle / signing.SIGNATURE_NAME
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_sign_and_load_with_the_right_key_predicts_the_same(signed, keys, bundles):
    pub = keys["good"].public_path
    expected = mbert_edge.load(bundles["text-classification"]).predict(TEXTS, top_k=None)
    pem = pub.read_bytes()
    raw = base64.b64decode(keys["good"].public_key_base64)
    for form in (
        pub,
        str(pub),
        pem,
        pem.decode(),
        raw,
        keys["good"].public_key_base64,
        [keys["other"].public_path, pub],
    ):
        got = mbert_edge.load(signed, public_key=form).predict(TEXTS, top_k=None)
        for x, y in zip(got, expected, strict=True):
            assert [r["label"] for r in x] == [r["label"] for r in y]
            assert [r["score"] for r in x] == pytest.approx([r["score"] for r in y], abs=1e-6)
    sig = signing.verify_bundle(signed, pub, min_release=5)
    assert (sig.key_id, sig.release) == (keys["good"].key_id, 5)
    assert sig.key_id == signing.key_id(pub) == signing.key_id(raw)
    assert mbert_edge.load(signed).predict("hallo")  # a signed bundle still loads without a key


def test_signature_file_format(signed, keys):
    doc = json.loads((signed / "manifest.sig").read_text())
    assert set(doc) == {
        "format",
        "version",
        "algorithm",
        "key_id",
        "manifest_sha256",
        "signed_at",
        "release",
        "signature",
    }
    assert (doc["format"], doc["version"], doc["algorithm"], doc["release"]) == (
        "mbert-edge-signature",
        1,
        "ed25519",
        5,
    )
    assert doc["manifest_sha256"] == hashlib.sha256((signed / "manifest.json").read_bytes()).hexdigest()
    assert doc["key_id"] == hashlib.sha256(base64.b64decode(keys["good"].public_key_base64)).hexdigest()
    # the documented statement, verifiable with any Ed25519 implementation
    text = (
        f"mbert-edge-signature v1\nalgorithm: ed25519\nkey_id: {doc['key_id']}\n"
        f"manifest_sha256: {doc['manifest_sha256']}\nsigned_at: {doc['signed_at']}\nrelease: 5\n"
    )
    assert signing.statement(doc["key_id"], doc["manifest_sha256"], doc["signed_at"], 5) == text.encode()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(keys["good"].public_key_base64))
    key.verify(base64.b64decode(doc["signature"]), text.encode())  # raises if wrong


def test_openssl_verifies_the_statement(signed, keys, tmp_path):
    """Apps without Python can verify with OpenSSL (or libsodium): the key files are standard PEM."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl")
    doc = json.loads((signed / "manifest.sig").read_text())
    (tmp_path / "statement").write_bytes(
        signing.statement(doc["key_id"], doc["manifest_sha256"], doc["signed_at"], doc["release"])
    )
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(doc["signature"]))
    cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(keys["good"].public_path), "-rawin"]
    out = subprocess.run([*cmd, "-in", str(tmp_path / "statement"), "-sigfile", str(tmp_path / "sig.bin")])
    if out.returncode != 0 and b"rawin" in (out.stderr or b""):
        pytest.skip("this openssl has no -rawin")
    assert out.returncode == 0


def test_unsigned_bundle_refused(copy_bundle, keys):
    b = copy_bundle("text-classification")
    with pytest.raises(BundleSignatureError, match="not signed") as info:
        mbert_edge.load(b, public_key=keys["good"].public_path)
    assert isinstance(info.value, BundleIntegrityError) and isinstance(info.value, MbertEdgeError)
    with pytest.raises(BundleSignatureError, match="not signed"):
        signing.verify_bundle(b, keys["good"].public_path)


def test_wrong_key_refused_naming_both_keys(signed, keys):
    with pytest.raises(BundleSignatureError) as info:
        mbert_edge.load(signed, public_key=keys["other"].public_path)
    msg = str(info.value)
    assert keys["good"].key_id[:16] in msg and keys["other"].key_id[:16] in msg


@pytest.mark.parametrize(
    "change",
    [
        lambda text: text + " ",  # the same JSON, other bytes
        lambda text: text.replace('"positive"', '"negative"', 1),
        lambda text: text.replace('"max_length": 128', '"max_length": 64', 1),
    ],
)
def test_manifest_changed_after_signing_refused(signed, keys, change):
    path = signed / "manifest.json"
    path.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(BundleSignatureError, match="changed after it was signed"):
        mbert_edge.load(signed, public_key=keys["good"].public_path)


@pytest.mark.parametrize("name", ["model.onnx", "model.onnx.data", "tokenizer.json"])
def test_file_changed_with_manifest_untouched_refused_by_checksum(signed, keys, name):
    _flip_byte(signed / name)
    signing.verify_signature(signed, keys["good"].public_path)  # the signature itself is still fine
    with pytest.raises(BundleIntegrityError, match="checksum"):
        mbert_edge.load(signed, public_key=keys["good"].public_path)
    with pytest.raises(BundleIntegrityError, match="checksum"):
        signing.verify_bundle(signed, keys["good"].public_path)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:40]), "malformed"),
        (lambda p: p.write_bytes(b""), "malformed"),
        (lambda p: p.write_bytes(b"\x00\xff garbage \x13"), "malformed"),
        (lambda p: p.write_text("[1, 2, 3]"), "malformed"),
        (lambda p: p.write_bytes(b" " * (70 * 1024)), "larger than"),
    ],
)
def test_damaged_signature_file_refused(signed, keys, damage, match):
    damage(signed / "manifest.sig")
    with pytest.raises(BundleSignatureError, match=match):
        mbert_edge.load(signed, public_key=keys["good"].public_path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(signature="not base64!"), "base64"),
        (lambda d: d.update(signature=base64.b64encode(b"x" * 63).decode()), "64"),
        (lambda d: d.update(signature=base64.b64encode(b"x" * 64).decode()), "altered or forged"),
        (lambda d: d.update(release=6), "altered or forged"),  # the release number is signed
        (lambda d: d.update(signed_at="2030-01-01T00:00:00Z"), "altered or forged"),
        (lambda d: d.update(manifest_sha256="0" * 64), "altered or forged"),
        (lambda d: d.update(algorithm="none"), "algorithm"),
        (lambda d: d.update(version=2), "newer"),
        (lambda d: d.update(key_id="zz"), "key_id"),
        (lambda d: d.pop("signed_at"), "signed_at"),
        (lambda d: d.update(release=-1), "release"),
    ],
)
def test_altered_signature_header_refused(signed, keys, change, match):
    _edit_sig(signed, change)
    with pytest.raises(BundleSignatureError, match=match):
        mbert_edge.load(signed, public_key=keys["good"].public_path)


def test_verify_false_with_public_key_refused(signed, keys):
    with pytest.raises(SigningError, match="verify=True"):
        mbert_edge.load(signed, public_key=keys["good"].public_path, verify=False)


def test_manifest_swapped_after_verification_refused(signed, keys):
    sig = signing.verify_signature(signed, keys["good"].public_path)
    path = signed / "manifest.json"
    path.write_text(path.read_text().replace('"positive"', '"negative"', 1))
    with pytest.raises(BundleSignatureError, match="changed while"):
        sig.check_manifest(Bundle.open(signed, verify=False).manifest)


def test_downgrade_refused_with_min_release(signed, copy_bundle, keys):
    assert signing.verify_bundle(signed, keys["good"].public_path, min_release=4).release == 5
    with pytest.raises(BundleSignatureError, match="downgrade"):
        signing.verify_bundle(signed, keys["good"].public_path, min_release=6)
    signing.sign_bundle(signed, keys["good"].private_path)  # re-signed without a release number
    with pytest.raises(BundleSignatureError, match="downgrade"):
        signing.verify_bundle(signed, keys["good"].public_path, min_release=0)
    with pytest.raises(SigningError, match="release"):
        signing.sign_bundle(signed, keys["good"].private_path, release=-1)


def test_broken_bundle_is_not_signed(copy_bundle, keys):
    b = copy_bundle("text-classification")
    _flip_byte(b / "tokenizer.json")
    with pytest.raises(BundleIntegrityError, match="checksum"):
        signing.sign_bundle(b, keys["good"].private_path)
    assert not (b / "manifest.sig").exists()


def test_key_files_mode_and_no_overwrite(tmp_path):
    pair = signing.generate_keypair(tmp_path / "k" / "priv.pem", tmp_path / "k" / "pub.pem")
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert pair.private_path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert pair.public_path.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = pair.private_path.read_bytes()
    with pytest.raises(SigningError, match="already exists"):
        signing.generate_keypair(pair.private_path, tmp_path / "k" / "pub2.pem")
    with pytest.raises(SigningError, match="already exists"):
        signing.generate_keypair(tmp_path / "k" / "priv2.pem", pair.public_path)
    assert pair.private_path.read_bytes() == before and not (tmp_path / "k" / "priv2.pem").exists()
    again = signing.generate_keypair(pair.private_path, pair.public_path, force=True)
    assert again.key_id != pair.key_id and stat.S_IMODE(again.private_path.stat().st_mode) == 0o600


def test_passphrase_encrypted_key(copy_bundle, tmp_path):
    pair = signing.generate_keypair(tmp_path / "p.key", tmp_path / "p.pub", passphrase="correct horse")
    assert "ENCRYPTED" in pair.private_path.read_text()
    b = copy_bundle("feature-extraction")
    with pytest.raises(SigningError, match="passphrase"):
        signing.sign_bundle(b, pair.private_path)
    with pytest.raises(SigningError, match="passphrase"):
        signing.sign_bundle(b, pair.private_path, passphrase="wrong")
    signing.sign_bundle(b, pair.private_path, passphrase="correct horse")
    assert mbert_edge.load(b, public_key=pair.public_path).embed("hola").shape == (32,)


def test_bad_public_keys_refused(signed, keys, tmp_path):
    for bad in (tmp_path / "missing.pub", "not a key", b"short", keys["good"].private_path, 42):
        with pytest.raises(SigningError):
            mbert_edge.load(signed, public_key=bad)
    with pytest.raises(SigningError, match="no public key"):
        mbert_edge.load(signed, public_key=[])


def test_missing_cryptography_names_the_extra(signed, keys, monkeypatch):
    for name in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    with pytest.raises(SigningUnavailableError, match=r"mbert-edge\[sign\]") as info:
        mbert_edge.load(signed, public_key=keys["good"].public_path)
    assert isinstance(info.value, MbertEdgeError)
    assert mbert_edge.load(signed).predict("hallo")  # without a key nothing needs cryptography


def test_runtime_imports_cryptography_only_to_verify(signed, keys):
    code = f"""
import sys
import mbert_edge, mbert_edge.signing, mbert_edge.cli
mbert_edge.load({str(signed)!r}).predict("hallo")
before = "cryptography" in sys.modules
mbert_edge.load({str(signed)!r}, public_key={str(keys["good"].public_path)!r})
print(before, "cryptography" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_cli_keygen_sign_info_predict(copy_bundle, tmp_path, capsys):
    b = copy_bundle("text-classification")
    keydir = tmp_path / "keys"
    assert main(["keygen", "-o", str(keydir)]) == 0
    out = capsys.readouterr().out
    priv, pub = keydir / "private.pem", keydir / "public.pem"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600 and signing.key_id(pub) in out
    assert main(["keygen", "-o", str(keydir)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["keygen", "--private", str(tmp_path / "x.pem")]) == 2

    assert main(["info", str(b), "--public-key", str(pub)]) == 1
    assert "not signed" in capsys.readouterr().err
    assert main(["sign", str(b), "--key", str(priv), "--release", "3"]) == 0
    assert "release 3" in capsys.readouterr().out
    assert main(["info", str(b), "--public-key", str(pub), "--min-release", "3"]) == 0
    out = capsys.readouterr().out
    assert "checksums   OK" in out and "signature   OK" in out and signing.key_id(pub)[:16] in out
    assert main(["info", str(b)]) == 0
    assert "NOT verified" in capsys.readouterr().out
    assert main(["info", str(b), "--public-key", str(pub), "--min-release", "4"]) == 1
    assert "downgrade" in capsys.readouterr().err
    assert main(["predict", str(b), "Hallo Welt", "--json", "--public-key", str(pub)]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == "Hallo Welt"

    other = signing.generate_keypair(tmp_path / "o.key", tmp_path / "o.pub")
    assert main(["predict", str(b), "Hallo Welt", "--public-key", str(other.public_path)]) == 1
    assert "signed by key" in capsys.readouterr().err
    # a key given as its base64 text, and several accepted keys (rotation)
    args = ["--public-key", other.public_key_base64, "--public-key", signing.public_key_base64(pub)]
    assert main(["info", str(b), *args]) == 0
    capsys.readouterr()


def test_cli_passphrase_and_tampering_exit_codes(copy_bundle, tmp_path, monkeypatch):
    b = copy_bundle("feature-extraction")
    monkeypatch.setenv("MBERT_EDGE_TEST_PASSPHRASE", "s3cret")  # inherited by the subprocesses

    def run(*args):
        return subprocess.run([sys.executable, "-m", "mbert_edge.cli", *args], capture_output=True, text=True)

    keys = tmp_path / "keys"
    assert run("keygen", "-o", str(keys), "--passphrase-env", "MBERT_EDGE_TEST_PASSPHRASE").returncode == 0
    out = run("sign", str(b), "--key", str(keys / "private.pem"))
    assert out.returncode == 1 and "passphrase" in out.stderr
    out = run("sign", str(b), "--key", str(keys / "private.pem"), "--passphrase-env", "MBERT_EDGE_TEST_PASSPHRASE")
    assert out.returncode == 0, out.stderr
    assert run("info", str(b), "--public-key", str(keys / "public.pem")).returncode == 0
    _flip_byte(b / "model.onnx.data", where=-1)
    out = run("info", str(b), "--public-key", str(keys / "public.pem"))
    assert out.returncode == 1 and out.stderr.startswith("error:") and "checksum" in out.stderr
