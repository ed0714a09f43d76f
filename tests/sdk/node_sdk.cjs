// Exercises every Vault method of the official WorkOS Node SDK (@workos-inc/node 11 and 12) against
// `vault serve` on loopback. Run by tests/sdk.rs; the environment carries the server address,
// two API keys of different environments, a name prefix and a blob made by the Rust library.
// Prints one JSON line: {"checks": N, "blob": <an SDK-encrypted blob for the other clients>}.
'use strict';
const assert = require('node:assert/strict');
const {
  WorkOS,
  ConflictException,
  NotFoundException,
  UnauthorizedException,
  UnprocessableEntityException,
} = require('@workos-inc/node');

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const opts = { apiHostname: env('VAULT_TEST_HOST'), https: process.env.VAULT_TEST_HTTPS === '1', port: Number(env('VAULT_TEST_PORT')), maxRetries: 0 };
const workosA = new WorkOS(env('VAULT_TEST_KEY_A'), opts);
const a = workosA.vault;
const b = new WorkOS(env('VAULT_TEST_KEY_B'), opts).vault;
const forged = new WorkOS('sk_' + 'x'.repeat(43), opts).vault;
const prefix = env('VAULT_TEST_PREFIX');
let checks = 0;
const check = (cond, what) => { assert.ok(cond, what); checks += 1; };

async function rejects(promise, cls, what) {
  try {
    await promise;
  } catch (e) {
    check(e instanceof cls, `${what}: expected ${cls.name}, got ${e && e.constructor && e.constructor.name}: ${e && e.message}`);
    return e;
  }
  assert.fail(`${what}: expected ${cls.name}, got success`);
}

async function main() {
  // create, read by id and by name (slash and spaces), describe
  const name = `${prefix} node/secret name`;
  const context = { organization_id: 'org_node', user_id: 'u_9' };
  const created = await a.createObject({ name, value: 's3cr3t', context });
  check(typeof created.id === 'string' && created.id.length > 0, 'create: id');
  check(typeof created.versionId === 'string', 'create: versionId is a string');
  check(created.updatedAt instanceof Date && !isNaN(created.updatedAt), 'create: updatedAt is a date');
  assert.deepEqual(created.context, context); checks += 1;
  const v1 = created.versionId;

  const read = await a.readObject({ id: created.id });
  check(read.value === 's3cr3t' && read.name === name, 'read by id');
  check(read.metadata.versionId === v1, 'read: metadata.versionId');
  const byName = await a.readObjectByName(name);
  check(byName.id === created.id && byName.value === 's3cr3t', 'read by name with slash and spaces');
  const described = await a.describeObject({ id: created.id });
  check(described.value === undefined && described.metadata.id === created.id, 'describe');

  // update without and with versionCheck; a stale one is a ConflictException
  const u1 = await a.updateObject({ id: created.id, value: 'second' });
  check(u1.metadata.versionId !== v1, 'update: a new version');
  await rejects(a.updateObject({ id: created.id, value: 'lost', versionCheck: v1 }), ConflictException, 'stale update');
  const u2 = await a.updateObject({ id: created.id, value: 'third', versionCheck: u1.metadata.versionId });
  check((await a.readObject({ id: created.id })).value === 'third', 'checked update wrote');

  // The object's created_at (not in the SDK's model): its creation, through every update.
  const { data: raw } = await workosA.get(`/vault/v1/kv/${created.id}/metadata`, {});
  const made = new Date(raw.metadata.created_at);
  check(!isNaN(made) && made <= created.updatedAt && made < new Date(raw.metadata.updated_at), 'created_at is the creation time');
  // A context never changes: the advice reaches the SDK's error message, and nothing is written.
  const moved = await rejects(workosA.put(`/vault/v1/kv/${created.id}`, { value: 'moved', key_context: { organization_id: 'org_other' } }, {}), UnprocessableEntityException, 'another context on update');
  check(moved.code === 'key_context_immutable' && moved.message.includes('create a new object'), `the immutable-context advice in the error: ${moved.message}`);
  check((await a.readObject({ id: created.id })).value === 'third', 'nothing written under another context');

  // versions: newest first, one current, the current one is the last update's
  const versions = await a.listObjectVersions({ id: created.id });
  check(versions.length === 3, `three versions, got ${versions.length}`);
  check(versions.filter((v) => v.currentVersion).length === 1, 'exactly one current');
  check(versions.find((v) => v.currentVersion).id === u2.metadata.versionId, 'current is the last update');
  check(versions.some((v) => v.id === v1 && !v.currentVersion), 'the first version is kept, not current');
  check(versions.every((v) => typeof v.etag === 'string' && v.etag.length === 32 && v.size > 0), 'etag and size');

  // a duplicate name is a ConflictException; a bad context an UnprocessableEntityException
  await rejects(a.createObject({ name, value: 'x', context }), ConflictException, 'duplicate name');
  const eleven = Object.fromEntries([...Array(11).keys()].map((i) => [`k${i}`, 'v']));
  await rejects(a.createObject({ name: `${prefix} eleven`, value: 'x', context: eleven }), UnprocessableEntityException, '11-pair context');

  // list with auto-pagination over more than one page (the SDK pages by 100)
  const pageNames = [];
  for (let i = 0; i < 105; i += 1) pageNames.push(`${prefix} page ${String(i).padStart(3, '0')}`);
  for (const n of pageNames) await a.createObject({ name: n, value: 'p', context: { organization_id: 'org_node' } });
  const list = await a.listObjects();
  check(list.data.length === 10, `first page has the server default 10, got ${list.data.length}`);
  check(list.listMetadata.after, 'first page has an after cursor');
  const all = await (await a.listObjects({ order: 'desc' })).autoPagination();
  const mine = all.filter((o) => o.name.startsWith(`${prefix} page `)).map((o) => o.name);
  check(mine.length === 105 && new Set(mine).size === 105, `auto-pagination saw ${mine.length} of 105`);
  check(all.every((o) => o.updatedAt instanceof Date), 'list items have dates');
  const limited = await a.listObjects({ limit: 5, search: `${prefix} page 00` });
  check(limited.data.length === 5, 'limit and search');

  // isolation: another environment's key sees nothing of A's
  await rejects(b.readObject({ id: created.id }), NotFoundException, 'B reads A');
  await rejects(b.updateObject({ id: created.id, value: 'B' }), NotFoundException, 'B updates A');
  await rejects(b.deleteObject({ id: created.id }), NotFoundException, 'B deletes A');
  check((await b.listObjects()).data.length === 0, 'B lists nothing');

  // an unknown key is UnauthorizedException and does nothing
  await rejects(forged.createObject({ name: `${prefix} forged`, value: 'x', context }), UnauthorizedException, 'forged key');
  await rejects(a.readObjectByName(`${prefix} forged`), NotFoundException, 'nothing was created by the forged key');

  // delete: a stale versionCheck is a ConflictException; afterwards NotFound
  await rejects(a.deleteObject({ id: created.id, versionCheck: v1 }), ConflictException, 'stale delete');
  await a.deleteObject({ id: created.id, versionCheck: u2.metadata.versionId });
  await rejects(a.readObject({ id: created.id }), NotFoundException, 'read after delete');
  await rejects(a.describeObject({ id: created.id }), NotFoundException, 'describe after delete');

  // the data-key API
  const pair = await a.createDataKey({ context: { organization_id: 'org_123' } });
  check(Buffer.from(pair.dataKey.key, 'base64').length === 32, 'a 32-byte data key');
  const again = await a.decryptDataKey({ keys: pair.encryptedKeys });
  check(again.key === pair.dataKey.key && again.id === pair.dataKey.id, 'decryptDataKey gives the same key');
  const rekeyed = await a.createRekey({ context: { organization_id: 'org_456' }, encryptedKeys: pair.encryptedKeys });
  check(rekeyed.dataKey === pair.dataKey.key && rekeyed.context.organization_id === 'org_456', 'rekey keeps the key, changes the context');
  check((await a.decryptDataKey({ keys: rekeyed.encryptedKeys })).key === pair.dataKey.key, 'the rekeyed blob decrypts');
  await rejects(b.decryptDataKey({ keys: pair.encryptedKeys }), Error, 'B cannot decrypt A\'s data key');

  // the SDK's own local encrypt/decrypt, and a blob the Rust library made
  const blob = await a.encrypt('node secret ✓', { organization_id: 'org_node' }, 'node-aad');
  check((await a.decrypt(blob, 'node-aad')) === 'node secret ✓', 'encrypt/decrypt round trip');
  await rejects(a.decrypt(blob, 'other-aad'), Error, 'wrong aad');
  const rustBlob = JSON.parse(env('VAULT_TEST_RUST_BLOB'));
  check((await a.decrypt(rustBlob.blob, rustBlob.aad)) === rustBlob.plaintext, 'decrypts the Rust blob');

  process.stdout.write(JSON.stringify({ checks, blob: { blob, aad: 'node-aad', plaintext: 'node secret ✓' } }) + '\n');
}

main().catch((e) => {
  console.error(`node SDK check failed after ${checks} checks:`, e && e.stack ? e.stack : e);
  process.exit(1);
});
