#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (fuzz/corpus/<target>/) from the test vectors and
the edge cases of each limit. Run from the repository root; the output is committed."""
import base64
import hashlib
import json
import os
import sys

VECTORS = "crates/vault-crypto/tests/vectors/"


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


def write(target, data: bytes):
    d = os.path.join("fuzz/corpus", target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


positive = list(blocks(VECTORS + "envelope-v1.txt")) + list(blocks(VECTORS + "envelope-v1-suite3.txt"))
negative = list(blocks(VECTORS + "envelope-v1-negative.txt"))

# Envelopes and their text form.
for b in positive:
    write("envelope", bytes.fromhex(b["ENVELOPE"]))
    write("envelope_text", b["TEXT"].encode())
    write("context_canonical", bytes.fromhex(b["CANONICAL"]))
    write("context_json", b["CONTEXT"].encode())
for b in negative:
    if "TEXT" in b:
        write("envelope_text", b["TEXT"].replace("\\n", "\n").encode())
    else:
        env = bytes.fromhex(b["ENVELOPE"])
        write("envelope", env)
        write("envelope_text", base64.b64encode(env))

# Streamed envelopes (suite 4): the vectors whole, cut, and extended; and mutation recipes
# (first byte: which change to the segments of a valid stream of the rest, and where).
for b in blocks(VECTORS + "envelope-v1-suite4.txt"):
    env = bytes.fromhex(b["ENVELOPE"])
    for data in [env, env[:-1], env[:-16], env + b"\x00", env[:60]]:
        write("stream", data)
        write("envelope", data)
for recipe in range(0, 256, 9):
    write("stream", bytes([recipe]) + bytes(range(256)) * 3 + b"tail")

# Canonical contexts at and past each limit.
def canonical(pairs, version=1, count=None):
    out = bytes([version, len(pairs) if count is None else count])
    for k, v in pairs:
        for f in (k.encode(), v.encode()):
            out += len(f).to_bytes(2, "big") + f
    return out

for seed in [
    canonical([("a", "1"), ("b", "2")]),
    canonical([("b", "2"), ("a", "1")]),
    canonical([("a", "1"), ("a", "1")]),
    canonical([("k" * 128, "v" * 500)]),
    canonical([("k" * 129, "v")]),
    canonical([("k", "\U0001F600" * 500)]),
    canonical([("k", "\U0001F600" * 501)]),
    canonical([("k%d" % i, "v") for i in range(10)]),
    canonical([("k%d" % i, "v") for i in range(11)]),
    canonical([("a", "1")], version=2),
    canonical([], count=0),
    canonical([("", "1")]),
    canonical([("a", "")]),
    canonical([("a\x00", "1")]),
    canonical([("a", "1")]) + b"\x00",
]:
    write("context_canonical", seed)

# Key-context JSON: valid and every rejection.
for seed in [
    '{"organization_id":"org_1","user_id":"u_9"}',
    '{ "a" : "1" }',
    '{"k\\u00e9y":"v\\n\\ud83d\\ude00"}',
    '{}', '[]', '"x"', '1', 'null', 'true', '',
    '{"a":"1","a":"2"}', '{"a":"1","\\u0061":"2"}',
    '{"a":1}', '{"a":true}', '{"a":null}', '{"a":["x"]}', '{"a":{"b":"c"}}',
    '{"":"v"}', '{"a":""}', '{"a\\u0000":"v"}', '{"a\\u0085":"v"}',
    '{"%s":"v"}' % ("k" * 128), '{"%s":"v"}' % ("k" * 129),
    '{"k":"%s"}' % ("v" * 500), '{"k":"%s"}' % ("v" * 501),
    json.dumps({"k%d" % i: "v" for i in range(10)}),
    json.dumps({"k%d" % i: "v" for i in range(11)}),
    '{"a":"1",}', '{"a":"\\ud800"}', '{"a":"1"} x',
    '{"a":"1"}' + " " * (16 * 1024 - 9),
    '{"a":"1"}' + " " * (16 * 1024 - 8),
]:
    write("context_json", seed.encode("utf-8"))
write("context_json", b'{"a":"\xff"}')

# Key-ring files.
key = base64.b64encode(bytes(range(32))).decode()
ring = {
    "format": "vault-keyring-v1", "name": "root", "primary": 2, "min_decryption_version": 1,
    "versions": [
        {"version": 1, "created_at": 1795943823, "destroyed_at": 1795950000},
        {"version": 2, "created_at": 1795943900, "key": key},
    ],
}
def variant(**changes):
    r = json.loads(json.dumps(ring))
    r.update(changes)
    return r

for seed in [
    ring,
    variant(primary=1),
    variant(primary=3),
    variant(min_decryption_version=0),
    variant(min_decryption_version=3),
    variant(format="vault-keyring-v2"),
    variant(name="a/b"),
    variant(versions=[]),
    variant(versions=[ring["versions"][1]]),
    variant(versions=ring["versions"] + [ring["versions"][1]]),
    variant(versions=[{"version": 1, "created_at": 1, "key": key[:-4] + "AAA="}, ring["versions"][1]]),
    variant(versions=[{"version": 1, "created_at": 1, "key": key, "destroyed_at": 2}, ring["versions"][1]]),
    variant(extra=True),
]:
    write("keyring_file", json.dumps(seed, indent=2).encode())
write("keyring_file", b'{"format":"vault-keyring-v1","format":"vault-keyring-v1"}')

# Master key files (`vault keys init-seal`) and sealed root keys: a valid file, its edges, and
# sealed-looking bytes of the right and wrong lengths.
good = b"vault-master-key-v1 " + base64.b64encode(bytes(range(32))) + b"\n"
for seed in [good, good[:-1], good[:-2], good + b"\n", good.replace(b"v1", b"v2"),
             b"vault-master-key-v1 " + base64.b64encode(bytes(33)) + b"\n",
             b"vault-master-key-v1  " + base64.b64encode(bytes(32)), good.upper(), b"\n" + good,
             bytes(60), bytes(59), bytes(12 + 32 + 16 + 1)]:
    write("master_key_file", seed)

# WorkOS SDK blobs: the three vectors, then each LEB128 and length edge.
for v in json.load(open(VECTORS + "workos-blob-vectors.json", encoding="utf-8")):
    blob = bytes.fromhex(v["blob_hex"])
    write("workos_blob", blob)
    write("workos_blob_text", v["blob_b64"].encode())
    write("workos_blob", blob[:28])
    write("workos_blob", blob[:29])
    write("workos_blob", blob[:-1])
head = bytes(12) + bytes(16)
for prefix in [b"\x00", b"\x01", b"\x7f", b"\x80\x01", b"\x80\x00", b"\x80", b"\xff\xff\xff\xff\x0f",
               b"\xff\xff\xff\xff\x10", b"\x80\x80\x80\x80\x80\x01", b"\x80\x80\x04", b"\x81\x80\x04"]:
    write("workos_blob", head + prefix + b"k" * 3 + b"ct")
write("workos_blob", head + b"\x80\x80\x04" + b"k" * 65536)
write("workos_blob", head + b"\x81\x80\x04" + b"k" * 65537)
for text in [b"", b"=", b"AAAA", b"AAA=", b"AA==", b"A===", b"AAAA\n", b"-_-_", base64.b64encode(head + b"\x01k")]:
    write("workos_blob_text", text)
# Every layout: the SDK-made and independent vectors (told apart, and named by a first byte:
# 0 IvFirst, 1 KeysFirst, 2 LongIv), and each one's edges.
LAYOUT_BYTE = {"IvFirst": 0, "KeysFirst": 1, "LongIv": 2}
for v in json.load(open(VECTORS + "workos-blob-layouts.json", encoding="utf-8")):
    blob = base64.b64decode(v["blob_b64"])
    pick = bytes([LAYOUT_BYTE[v["layout"]]])
    write("workos_blob", blob)
    write("workos_blob_text", v["blob_b64"].encode())
    for cut in [blob, blob[:-1], blob[:1], blob[:28], blob[:48], blob[:60]]:
        write("workos_blob_layouts", pick + cut)
write("workos_blob_layouts", b"\x01\x07VLTE\x01\x00\x01" + bytes(28))
write("workos_blob_layouts", b"\x02" + bytes(48) + b"\x01k")

# Server request bodies: one byte picks the endpoint (0 create, 1 update, 2 data-key, 3 decrypt,
# 4 rekey), the rest is the body.
ctx = '{"organization_id":"org_1","user_id":"u_9"}'
eleven = "{" + ",".join(f'"k{i}":"v"' for i in range(11)) + "}"
bodies = [
    (0, '{"key_context":%s,"name":"my/secret name","value":"s3cr3t"}' % ctx),
    (0, '{"name":"n","value":"v","key_context":{"a":"b"}}'),
    (0, '{"key_context":%s,"name":"n","value":"v"}' % eleven),
    (0, '{"key_context":{"a":"b","a":"c"},"name":"n","value":"v"}'),
    (0, '{"key_context":{"a":1},"name":"n","value":"v"}'),
    (0, '{"key_context":{},"name":"n","value":"v"}'),
    (0, '{"key_context":{"a":"b"},"name":5,"value":"v"}'),
    (0, '{"key_context":{"a":"b"},"name":"n","name":"m","value":"v"}'),
    (0, '{"key_context":{"a":"b"},"name":"n","value":"v","extra":1}'),
    (0, '[1,2,3]'), (0, ''), (0, '{'), (0, 'null'), (0, '"x"'),
    (1, '{"value":"new","version_check":null}'),
    (1, '{"value":"new","version_check":"ver_1"}'),
    (1, '{"value":"new"}'), (1, '{"value":1}'), (1, '{"version_check":"v"}'),
    (2, '{"context":{"organization_id":"org_123"}}'), (2, '{"context":"x"}'), (2, '{}'),
    (3, '{"keys":"b3BhcXVl"}'), (3, '{"keys":"***"}'), (3, '{"keys":null}'),
    (4, '{"context":{"organization_id":"org_456"},"encrypted_keys":"b3BhcXVl"}'),
    (4, '{"context":{"a":"b"},"encrypted_keys":7}'),
]
for which, body in bodies:
    write("request_body", bytes([which]) + body.encode())
for q in [
    "", "limit=10", "limit=0", "limit=101", "limit=ten", "order=desc", "order=asc", "order=x",
    "search=abc+def", "after=garbage", "before=", "after=" + base64.urlsafe_b64encode(
        b"v1.1700000000000000.secret_00000000000000000000000000000000").decode().rstrip("="),
    "updatedAfter=2024-01-02T03%3A04%3A05.678Z",
    "updated_after=Tue+Jan+02+2024+03%3A04%3A05+GMT%2B0000+(Coordinated+Universal+Time)",
    "updatedAfter=9999-12-31T23:59:59-01:00", "updatedAfter=yesterday",
    "limit=5&before=a&after=b", "%zz=1", "sk_" + "A" * 43,
]:
    write("list_query", q.encode())
for which, value in [
    (0, "bytes=0-0"), (0, "bytes=65535-65536"), (0, "bytes=-10"), (0, "bytes=7-"),
    (0, "bytes=9-3"), (0, "bytes=0-1,5-6"), (0, "items=0-1"), (0, "bytes=18446744073709551615-"),
    (0, "bytes=-0"), (1, '{"organization_id":"org_1"}'), (1, '{"a":"1","a":"2"}'), (1, "{}"),
    (1, '{"vault_byok":"x"}'), (1, "not json"),
]:
    write("blob_headers", bytes([which]) + value.encode())
print("seeds written", file=sys.stderr)
