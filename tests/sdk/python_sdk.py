"""Exercises every Vault method of the official WorkOS Python SDK (workos 10.x) against
`vault serve` on loopback. Run by tests/sdk.rs; the environment carries the server URL, two API
keys of different environments, a name prefix and blobs made by the Rust library and the Node SDK.
Prints one JSON line: {"checks": N, "blob": <an SDK-encrypted blob for the Rust side>}."""
import base64
import json
import os
import sys
from datetime import datetime, timezone

from workos import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    AuthenticationError,
    UnprocessableEntityError,
    WorkOSClient,
)

url = os.environ["VAULT_TEST_URL"]
prefix = os.environ["VAULT_TEST_PREFIX"]
a = WorkOSClient(api_key=os.environ["VAULT_TEST_KEY_A"], base_url=url, max_retries=0).vault
b = WorkOSClient(api_key=os.environ["VAULT_TEST_KEY_B"], base_url=url, max_retries=0).vault
forged = WorkOSClient(api_key="sk_" + "x" * 43, base_url=url, max_retries=0).vault
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def raises(cls, what, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the type is the assertion
        check(isinstance(e, cls), f"{what}: expected {cls.__name__}, got {type(e).__name__}: {e}")
        return e
    raise AssertionError(f"{what}: expected {cls.__name__}, got success")


def main():
    name = f"{prefix} py/secret name"
    context = {"organization_id": "org_py", "user_id": "u_9"}
    created = a.create_kv(key_context=context, name=name, value="s3cr3t")
    check(created.id and isinstance(created.version_id, str), "create: id and version_id")
    check(created.context == context, "create: context")
    check(isinstance(created.updated_at, datetime), "create: updated_at parses")
    check(created.updated_by.name == os.environ["VAULT_TEST_KEY_A_NAME"], "create: updated_by is the API key")
    v1 = created.version_id

    got = a.get_kv(created.id)
    check(got.value == "s3cr3t" and got.name == name, "read by id")
    by_name = a.get_name(name)
    check(by_name.id == created.id and by_name.value == "s3cr3t", "read by name with slash and spaces")
    meta = a.list_kv_metadata(created.id)
    check(meta.id == created.id and meta.metadata.version_id == v1, "describe")

    u1 = a.update_kv(created.id, value="second")
    check(u1.metadata.version_id != v1, "update without version_check")
    raises(ConflictError, "stale update", a.update_kv, created.id, value="lost", version_check=v1)
    u2 = a.update_kv(created.id, value="third", version_check=u1.metadata.version_id)
    check(a.get_kv(created.id).value == "third", "checked update wrote")

    # The object's created_at (not in the SDK's model): its creation, through every update.
    raw = a._client.request(method="get", path=("vault", "v1", "kv", created.id, "metadata"))
    made = datetime.fromisoformat(raw["metadata"]["created_at"].replace("Z", "+00:00"))
    check(made <= created.updated_at < u2.metadata.updated_at, "created_at is the creation time")
    # A context never changes: the advice reaches the SDK's error, and nothing is written.
    moved = raises(UnprocessableEntityError, "another context on update", a._client.request,
                   method="put", path=("vault", "v1", "kv", created.id),
                   body={"value": "moved", "key_context": {"organization_id": "org_other"}})
    check(moved.code == "key_context_immutable" and "create a new object" in str(moved),
          f"the immutable-context advice in the error: {moved}")
    check(a.get_kv(created.id).value == "third", "nothing written under another context")

    versions = a.list_kv_versions(created.id)
    data = versions.data if hasattr(versions, "data") else versions
    check(len(data) == 3, f"three versions, got {len(data)}")
    current = [v for v in data if v.current_version]
    check(len(current) == 1 and current[0].id == u2.metadata.version_id, "one current: the last update")
    check(all(isinstance(v.etag, str) and len(v.etag) == 32 and v.size > 0 for v in data), "etag and size")

    raises(ConflictError, "duplicate name", a.create_kv, key_context=context, name=name, value="x")
    eleven = {f"k{i}": "v" for i in range(11)}
    raises(UnprocessableEntityError, "11-pair context", a.create_kv, key_context=eleven, name=f"{prefix} eleven", value="x")

    names = [f"{prefix} page {i:03d}" for i in range(25)]
    for n in names:
        a.create_kv(key_context={"organization_id": "org_py"}, name=n, value="p")
    page = a.list_kv(limit=10)
    check(len(page.data) == 10 and page.list_metadata.after, "first page of 10 with an after cursor")
    seen = [o.name for o in a.list_kv(limit=10).auto_paging_iter() if o.name.startswith(f"{prefix} page ")]
    check(len(seen) == 25 and len(set(seen)) == 25, f"auto-pagination saw {len(seen)} of 25")
    recent = a.list_kv(limit=100, updated_after=datetime(2000, 1, 1, tzinfo=timezone.utc))
    check(len(recent.data) >= 25, "updated_after as a datetime")
    none = a.list_kv(limit=100, updated_after="2999-01-01T00:00:00.000Z")
    check(len(none.data) == 0, "updated_after in the future")
    check(len(a.list_kv(limit=100, search=f"{prefix} PAGE 01").data) == 10, "case-insensitive search")

    raises(NotFoundError, "B reads A", b.get_kv, created.id)
    raises(NotFoundError, "B updates A", b.update_kv, created.id, value="B")
    raises(NotFoundError, "B deletes A", b.delete_kv, created.id)
    check(len(b.list_kv().data) == 0, "B lists nothing")

    raises(AuthenticationError, "forged key", forged.create_kv, key_context=context, name=f"{prefix} forged", value="x")
    raises(NotFoundError, "nothing created by the forged key", a.get_name, f"{prefix} forged")

    raises(ConflictError, "stale delete", a.delete_kv, created.id, version_check=v1)
    a.delete_kv(created.id, version_check=u2.metadata.version_id)
    raises(NotFoundError, "read after delete", a.get_kv, created.id)
    raises(NotFoundError, "versions after delete", a.list_kv_versions, created.id)

    pair = a.create_data_key(context={"organization_id": "org_123"})
    check(len(base64.b64decode(pair.data_key)) == 32, "a 32-byte data key")
    again = a.create_decrypt(keys=pair.encrypted_keys)
    check(again.data_key == pair.data_key and again.id == pair.id, "decrypt gives the same key")
    re = a.create_rekey(context={"organization_id": "org_456"}, encrypted_keys=pair.encrypted_keys)
    check(re.data_key == pair.data_key and re.context == {"organization_id": "org_456"}, "rekey")
    check(a.create_decrypt(keys=re.encrypted_keys).data_key == pair.data_key, "the rekeyed blob decrypts")
    raises(BadRequestError, "B cannot decrypt A's data key", b.create_decrypt, keys=pair.encrypted_keys)
    raises(BadRequestError, "invalid base64", a.create_decrypt, keys="***")

    blob = a.encrypt(data="python secret ✓", key_context={"organization_id": "org_py"}, associated_data="py-aad")
    check(a.decrypt(encrypted_data=blob, associated_data="py-aad") == "python secret ✓", "encrypt/decrypt round trip")
    raises(Exception, "wrong aad", a.decrypt, encrypted_data=blob, associated_data="other")
    for source in ("VAULT_TEST_RUST_BLOB", "VAULT_TEST_NODE_BLOB"):
        other = json.loads(os.environ[source])
        check(a.decrypt(encrypted_data=other["blob"], associated_data=other["aad"]) == other["plaintext"],
              f"decrypts the blob of {source}")

    print(json.dumps({"checks": checks, "blob": {"blob": blob, "aad": "py-aad", "plaintext": "python secret ✓"}}))


try:
    main()
except Exception as e:  # noqa: BLE001
    print(f"python SDK check failed after {checks} checks: {type(e).__name__}: {e}", file=sys.stderr)
    raise
