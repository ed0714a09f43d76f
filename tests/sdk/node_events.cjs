// The WorkOS Node SDK (@workos-inc/node 11) against vault serve's events, webhooks and
// idempotency. Run by tests/sdk.rs in two modes:
//   VAULT_TEST_MODE=api       listEvents over several pages with filters and a time range, and a
//                             create retried by the SDK (its own Idempotency-Key) through a proxy
//                             that loses the first answer; the same key with another body is a 422;
//   VAULT_TEST_MODE=webhooks  constructEvent accepts every delivery in VAULT_TEST_DELIVERIES, and
//                             rejects a changed body, an old timestamp and another secret.
// Prints one JSON line: {"checks": N, ...}.
'use strict';
const assert = require('node:assert/strict');
const http = require('node:http');
const crypto = require('node:crypto');
const { WorkOS, UnprocessableEntityException, SignatureVerificationException } = require('@workos-inc/node');

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
let checks = 0;
const check = (cond, what) => { assert.ok(cond, what); checks += 1; };

async function listAll(workos, options) {
  const pages = [];
  let after;
  for (;;) {
    const page = await workos.events.listEvents({ ...options, after });
    check(page.data.length <= options.limit, 'a page holds at most limit events');
    pages.push(page.data);
    after = page.listMetadata.after;
    if (!after) return pages;
  }
}

async function api() {
  const host = env('VAULT_TEST_HOST');
  const port = Number(env('VAULT_TEST_PORT'));
  const key = env('VAULT_TEST_KEY');
  const workos = new WorkOS(key, { apiHostname: host, https: false, port, maxRetries: 0 });
  const org = 'org_events_node';
  const start = new Date(Date.now() - 1000).toISOString();
  const names = [];
  for (let i = 0; i < 5; i += 1) {
    const name = `events-node-${i}`;
    const o = await workos.vault.createObject({ name, value: 'v', context: { organization_id: org } });
    names.push(name);
    if (i === 0) await workos.vault.readObject({ id: o.id });
  }
  // Another organization's object, filtered out.
  await workos.vault.createObject({ name: 'events-node-other', value: 'v', context: { organization_id: 'org_other' } });

  const pages = await listAll(workos, { events: ['vault.data.created', 'vault.data.read'], organizationId: org, rangeStart: start, limit: 2 });
  check(pages.length === 3, `6 events in pages of 2: ${pages.map((p) => p.length)}`);
  const events = pages.flat();
  check(new Set(events.map((e) => e.id)).size === 6, 'no event twice');
  const created = events.filter((e) => e.event === 'vault.data.created');
  assert.deepEqual(created.map((e) => e.data.kvName), names); checks += 1;
  check(created.every((e) => e.data.keyContext.organization_id === org), 'keyContext');
  check(created.every((e) => e.data.actorSource === 'api' && e.data.actorId.startsWith('key_')), 'actor fields');
  const read = events.find((e) => e.event === 'vault.data.read');
  check(read && read.data.kvName === names[0] && read.data.keyId.startsWith('managed://'), 'the read event');
  for (let i = 1; i < events.length; i += 1) {
    check(events[i - 1].createdAt <= events[i].createdAt, 'oldest first');
  }
  const before = await workos.events.listEvents({ events: ['vault.data.created'], organizationId: org, rangeEnd: start });
  check(before.data.length === 0, 'nothing before the range');

  // A create whose first answer is lost: the SDK retries with the same Idempotency-Key and gets
  // the object made the first time.
  const seen = [];
  const proxy = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const headers = { ...req.headers, host: `${host}:${port}` };
      const upstream = http.request({ host, port, method: req.method, path: req.url, headers }, (up) => {
        const answer = [];
        up.on('data', (c) => answer.push(c));
        up.on('end', () => {
          const isCreate = req.method === 'POST' && req.url === '/vault/v1/kv';
          if (isCreate) seen.push({ key: req.headers['idempotency-key'], status: up.statusCode });
          if (isCreate && seen.length === 1) {
            res.writeHead(503, { 'content-type': 'application/json' });
            res.end('{"code":"lost","message":"the answer was lost on the way"}');
            return;
          }
          res.writeHead(up.statusCode, up.headers);
          res.end(Buffer.concat(answer));
        });
      });
      upstream.end(body);
    });
  });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  const retrying = new WorkOS(key, { apiHostname: '127.0.0.1', https: false, port: proxy.address().port, maxRetries: 2 });
  const once = await retrying.vault.createObject({ name: 'retried-node', value: 'v', context: { organization_id: org } });
  proxy.close();
  check(seen.length === 2, `the SDK retried once: ${JSON.stringify(seen)}`);
  check(seen[0].status === 201 && seen[1].status === 201, 'both reached the server and succeeded');
  check(seen[0].key && seen[0].key === seen[1].key && seen[0].key.startsWith('retry-'), 'one key across the retry');
  const byName = await workos.vault.readObjectByName('retried-node');
  check(byName.id === once.id, 'the retry answered the object made the first time');
  const listed = await workos.vault.listObjects({ limit: 100 });
  check(listed.data.filter((o) => o.name === 'retried-node').length === 1, 'created once');
  // The same key with another request: 422 idempotency_key_reused.
  try {
    await workos.post('/vault/v1/kv', { name: 'not-retried', value: 'x', key_context: { organization_id: org } }, { idempotencyKey: seen[0].key });
    assert.fail('a reused key was accepted');
  } catch (e) {
    check(e instanceof UnprocessableEntityException && e.code === 'idempotency_key_reused', `reused key: ${e.constructor.name} ${e.code}`);
  }
  return { checks };
}

async function webhooks() {
  const workos = new WorkOS('sk_' + 'x'.repeat(43));
  const secret = env('VAULT_TEST_SECRET');
  const deliveries = JSON.parse(require('node:fs').readFileSync(env('VAULT_TEST_DELIVERIES'), 'utf8'));
  check(deliveries.length > 0, 'deliveries to check');
  for (const d of deliveries) {
    const event = await workos.webhooks.constructEvent({ payload: d.body, sigHeader: d.signature, secret });
    check(event.id === JSON.parse(d.body).id && event.event === 'vault.data.created', 'constructEvent');
    check(typeof event.data.kvName === 'string' && event.createdAt !== undefined, 'a typed Vault event');
  }
  const d = deliveries[0];
  const changed = d.body.replace('"vault.data.created"', '"vault.data.deleted"');
  const rejected = async (payload, sigHeader, key, what) => {
    try {
      await workos.webhooks.constructEvent({ payload, sigHeader, secret: key });
      assert.fail(`${what} was accepted`);
    } catch (e) {
      check(e instanceof SignatureVerificationException, `${what}: ${e.constructor.name}: ${e.message}`);
    }
  };
  await rejected(changed, d.signature, secret, 'a changed body');
  await rejected(d.body, d.signature, 'not-the-secret', 'another secret');
  // Correctly signed, but 10 minutes old.
  const t = Date.now() - 600000;
  const v1 = crypto.createHmac('sha256', secret).update(`${t}.${d.body}`).digest('hex');
  await rejected(d.body, `t=${t}, v1=${v1}`, secret, 'an old timestamp');
  return { checks };
}

(process.env.VAULT_TEST_MODE === 'webhooks' ? webhooks() : api())
  .then((out) => console.log(JSON.stringify(out)))
  .catch((e) => { console.error(e); process.exit(1); });
