"""The WorkOS Python SDK (workos 10.x) against vault serve's events, webhooks and idempotency.
Run by tests/sdk.rs in two modes (VAULT_TEST_MODE):
  api       list_events with auto-pagination over several pages, filters and a time range;
            create_kv twice with one idempotency key (one object); another body is a 422;
  webhooks  verify_event accepts every delivery in VAULT_TEST_DELIVERIES and rejects a changed
            body, an old timestamp and another secret.
Prints one JSON line: {"checks": N}."""
import hashlib
import hmac
import json
import os
import time
from datetime import datetime, timedelta, timezone

from workos import UnprocessableEntityError, WorkOSClient

checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def api():
    client = WorkOSClient(api_key=os.environ["VAULT_TEST_KEY"], base_url=os.environ["VAULT_TEST_URL"], max_retries=0)
    org = "org_events_py"
    start = (datetime.now(timezone.utc) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for i in range(5):
        client.vault.create_kv(key_context={"organization_id": org}, name=f"events-py-{i}", value="v")
    page = client.events.list_events(events=["vault.data.created"], organization_id=org, range_start=start, limit=2)
    check(len(page.data) == 2 and page.has_more(), "a first page of 2 with more after it")
    events = list(page.auto_paging_iter())
    check(len(events) == 5, f"auto-pagination over 3 pages: {len(events)}")
    check(len({e.id for e in events}) == 5, "no event twice")
    check([e.data.kv_name for e in events] == [f"events-py-{i}" for i in range(5)], "oldest first, with kv_name")
    check(all(e.event == "vault.data.created" for e in events), "the filter")
    check(all(e.data.key_context["organization_id"] == org for e in events), "key_context")
    later = client.events.list_events(events=["vault.data.created"], organization_id=org, range_end=start)
    check(len(later.data) == 0, "nothing before the range")

    key = "py-idem-" + str(time.time_ns())
    one = client.vault.create_kv(key_context={"organization_id": org}, name="retried-py", value="v", request_options={"idempotency_key": key})
    two = client.vault.create_kv(key_context={"organization_id": org}, name="retried-py", value="v", request_options={"idempotency_key": key})
    check(one.id == two.id, "the same key answers the same object")
    listed = client.vault.list_kv(limit=100)
    check(sum(1 for o in listed.data if o.name == "retried-py") == 1, "created once")
    try:
        client.vault.create_kv(key_context={"organization_id": org}, name="other-py", value="v", request_options={"idempotency_key": key})
        raise AssertionError("a reused key was accepted")
    except UnprocessableEntityError as e:
        check("idempotency_key_reused" in str(e) or getattr(e, "code", None) == "idempotency_key_reused", f"reused key: {e}")


def webhooks():
    client = WorkOSClient(api_key="sk_" + "x" * 43)
    secret = os.environ["VAULT_TEST_SECRET"]
    with open(os.environ["VAULT_TEST_DELIVERIES"]) as f:
        deliveries = json.load(f)
    check(len(deliveries) > 0, "deliveries to check")
    for d in deliveries:
        event = client.webhooks.verify_event(event_body=d["body"], event_signature=d["signature"], secret=secret)
        check(event.id == json.loads(d["body"])["id"] and event.event == "vault.data.created", "verify_event")
        check(isinstance(event.data.kv_name, str), "a typed Vault event")
    d = deliveries[0]

    def rejected(body, signature, key, what):
        try:
            client.webhooks.verify_event(event_body=body, event_signature=signature, secret=key)
        except ValueError:
            check(True, what)
            return
        raise AssertionError(f"{what} was accepted")

    rejected(d["body"].replace('"vault.data.created"', '"vault.data.deleted"'), d["signature"], secret, "a changed body")
    rejected(d["body"], d["signature"], "not-the-secret", "another secret")
    t = int(time.time() * 1000) - 600_000
    v1 = hmac.new(secret.encode(), f"{t}.{d['body']}".encode(), hashlib.sha256).hexdigest()
    rejected(d["body"], f"t={t}, v1={v1}", secret, "an old timestamp")


(webhooks if os.environ.get("VAULT_TEST_MODE") == "webhooks" else api)()
print(json.dumps({"checks": checks}))
