#!/usr/bin/env python3
"""An independent implementation of docs/FORMAT.md, in Python with the `cryptography` package,
checked against the Rust test vectors. If both agree byte for byte, the spec is implementable
as written and the Rust code does what the spec says.

Usage: verify_vectors.py crates/vault-crypto/tests/vectors/envelope-v1.txt \
           crates/vault-crypto/tests/vectors/envelope-v1-suite3.txt \
           crates/vault-crypto/tests/vectors/envelope-v1-suite4.txt
"""
import base64
import json
import struct
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives import hmac

MAGIC = b"VLTE"
VERSION = 1
KEK_LABEL = b"vault-crypto/v1/managed-kek"
CONTENT_KEY_LABEL = b"vault-crypto/v1/content-key"
COMMITMENT_LABEL = b"vault-crypto/v1/commitment"


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    h = hmac.HMAC(salt if salt else b"\x00" * 32, hashes.SHA256())
    h.update(ikm)
    return h.finalize()


def hkdf_expand(prk: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, info).derive(prk)


def message_keys(suite: int, dek: bytes, message_id: bytes):
    """FORMAT.md, "Suites": the content key and the commitment of one message."""
    if suite == 1:
        prk = hkdf_extract(message_id, dek)
        info = struct.pack(">H", suite)
        return (hkdf_expand(prk, CONTENT_KEY_LABEL + info),
                hkdf_expand(prk, COMMITMENT_LABEL + info))
    assert suite in (3, 4), "unknown suite %d" % suite
    # RFC 8452's message-encryption key with the message id's first 12 bytes as its nonce: the
    # first 8 bytes of AES-256(DK, le32(i) || message_id[:12]), i = 2..5.
    aes = Cipher(algorithms.AES(dek), modes.ECB()).encryptor()
    first = 2 if suite == 3 else 6  # suite 4: the same derivation on counters 6 to 9
    content_key = b"".join(aes.update(struct.pack("<I", i) + message_id[:12])[:8]
                           for i in range(first, first + 4))
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"vault/%d" % suite + dek + message_id[:16])
    return content_key, digest.finalize()


def canonical_context(json_text: str) -> bytes:
    pairs = json.loads(json_text, object_pairs_hook=list)
    keys = [k for k, _ in pairs]
    assert len(set(keys)) == len(keys), "duplicate keys"
    pairs.sort(key=lambda kv: kv[0].encode("utf-8"))
    out = bytes([1, len(pairs)])
    for k, v in pairs:
        for field in (k.encode("utf-8"), v.encode("utf-8")):
            out += struct.pack(">H", len(field)) + field
    return out


def wrapped_key_field(key_ref: str, wrapped: bytes) -> bytes:
    scheme, rest = key_ref.split("://", 1)
    key_id, _, version = rest.rpartition("#") if "#" in rest else (rest, "", "")
    s, k, v = scheme.encode(), key_id.encode(), version.encode()
    return (bytes([len(s)]) + s + struct.pack(">H", len(k)) + k + bytes([len(v)]) + v
            + struct.pack(">H", len(wrapped)) + wrapped)


def blocks(path):
    block = {}
    for line in open(path, encoding="utf-8").read().splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if block:
                yield block
            block = {}
            continue
        k, _, v = line.partition(" =")
        block[k] = v[1:] if v.startswith(" ") else v


def check(b):
    h = bytes.fromhex
    canonical = canonical_context(b["CONTEXT"])
    assert canonical == h(b["CANONICAL"]), "canonical context"

    primary = int(b["ROOT_PRIMARY"])
    root = h(b["ROOT_KEY_V%d" % primary])
    kek = hkdf_expand(hkdf_extract(b"", root), KEK_LABEL + canonical)
    assert kek == h(b["KEK"]), "KEK"
    dek, wrap_nonce = h(b["DEK"]), h(b["WRAP_NONCE"])
    wrapped = wrap_nonce + AESGCM(kek).encrypt(wrap_nonce, dek, canonical)
    assert wrapped == h(b["WRAPPED"]), "managed wrap"
    assert b["KEY_REF"] == "managed://%s#v%d" % (b["RING"], primary), "key reference"

    message_id = h(b["MESSAGE_ID"])
    suite_id = int(b.get("SUITE", "1"))
    content_key, commitment = message_keys(suite_id, dek, message_id)
    suite = struct.pack(">H", suite_id)
    assert content_key == h(b["CONTENT_KEY"]), "content key"
    assert commitment == h(b["COMMITMENT"]), "commitment"

    if suite_id == 4:
        # FORMAT.md "Suite 0x0004: segments": the header ends with the segment size and the
        # nonce prefix; segment i is sealed with nonce prefix || be32(i) || last flag.
        size, prefix = int(b["SEGMENT_SIZE"]), h(b["NONCE_PREFIX"])
        framing = struct.pack(">I", size) + prefix
    else:
        nonce = h(b["NONCE"])
        framing = nonce
    header = (MAGIC + bytes([VERSION]) + suite + message_id + struct.pack(">H", len(canonical))
              + canonical + commitment + framing)
    keys = [wrapped_key_field(b["KEY_REF"], wrapped)]
    if "EXTRA_KEY_REF" in b:
        keys.append(wrapped_key_field(b["EXTRA_KEY_REF"], h(b["EXTRA_WRAPPED"])))
    aad, plaintext = header + h(b["AAD"]), h(b["PLAINTEXT"])
    if suite_id == 4:
        chunks = [plaintext[i:i + size] for i in range(0, len(plaintext), size)] or [b""]
        body = b"".join(
            AESGCM(content_key).encrypt(
                prefix + struct.pack(">I", i) + bytes([i == len(chunks) - 1]), chunk, aad)
            for i, chunk in enumerate(chunks))
    else:
        body = AESGCM(content_key).encrypt(nonce, plaintext, aad)
    envelope = header + bytes([len(keys)]) + b"".join(keys) + body
    assert envelope == h(b["ENVELOPE"]), "envelope"
    if "TEXT" in b:
        assert base64.b64encode(envelope).decode() == b["TEXT"], "text form"


def main():
    count = 0
    for path in sys.argv[1:]:
        for b in blocks(path):
            try:
                check(b)
            except AssertionError as e:
                print("FAILED %s: %s" % (b.get("NAME"), e))
                print("0 passed, 1 failed")
                return 1
            count += 1
    print("independent FORMAT.md implementation (Python): %d vectors reproduced" % count)
    return 0 if count else 1


if __name__ == "__main__":
    sys.exit(main())
