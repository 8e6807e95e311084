import { createHmac, randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { problemOf, testGateway, type TestGateway } from './fixtures.js';

/**
 * Webhook triggers in-process: managing them over the API, and `POST /hooks/:id` verifying
 * Standard Webhooks and GitHub signatures. Every signature here is computed with node:crypto in
 * this file, never with the gateway's own signing code, and the Standard Webhooks
 * specification's published example is checked as well.
 */

let g: TestGateway;
let acme: string;
/** The gateway's clock: real time plus an offset the test moves, or a fixed instant. */
let offsetMs = 0;
let fixedMs: number | undefined;
const clock = () => fixedMs ?? Date.now() + offsetMs;
const nowSeconds = () => Math.floor(clock() / 1000);

afterEach(async () => {
  await g?.close();
  offsetMs = 0;
  fixedMs = undefined;
});

async function start(env: Record<string, string> = {}, quota?: Parameters<TestGateway['tenant']>[1]): Promise<void> {
  g = await testGateway(env, { clock });
  acme = await fnTenant('acme', quota);
  await deploy('hook', { command: 'cat' });
}

async function fnTenant(id: string, quota?: Parameters<TestGateway['tenant']>[1]): Promise<string> {
  await g.tenant(id, quota);
  return g.token({ tenant: id, scopes: ['jobs:read', 'jobs:write', 'functions:read', 'functions:write'] });
}

async function deploy(name: string, body: unknown, token = acme): Promise<void> {
  const res = await g.req('PUT', `/v1/functions/${name}`, { token, body });
  expect(res.status, await res.clone().text()).toBeLessThan(300);
}

interface Created {
  id: string;
  url: string;
  secret: string;
  kind: string;
  function: string;
  createdAt: string;
}

async function addTrigger(fn = 'hook', kind?: 'standard' | 'github', token = acme): Promise<Created> {
  const res = await g.req('POST', `/v1/functions/${fn}/triggers`, { token, body: kind ? { kind } : {} });
  expect(res.status, await res.clone().text()).toBe(201);
  return (await res.json()) as Created;
}

/** Standard Webhooks, by hand: base64 HMAC-SHA256 with the secret's decoded bytes over "id.ts.body". */
function stdSig(secret: string, id: string, ts: number, body: string | Buffer): string {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  return 'v1,' + createHmac('sha256', key).update(`${id}.${ts}.`).update(body).digest('base64');
}

/** GitHub, by hand: hex HMAC-SHA256 of the body keyed with the secret's text. */
const ghSig = (secret: string, body: string | Buffer) => 'sha256=' + createHmac('sha256', secret).update(body).digest('hex');

function fire(id: string, body: string | Buffer, headers: Record<string, string>) {
  return g.req('POST', `/hooks/${id}`, { raw: body, headers: { 'content-type': 'application/json', ...headers } });
}

/** A correctly signed standard delivery, with overrides. */
function fireStd(t: { id: string; secret: string }, body: string, o: { msgId?: string; ts?: number; signature?: string; headers?: Record<string, string> } = {}) {
  const msgId = o.msgId ?? `msg_${randomUUID()}`;
  const ts = o.ts ?? nowSeconds();
  return fire(t.id, body, { 'webhook-id': msgId, 'webhook-timestamp': String(ts), 'webhook-signature': o.signature ?? stdSig(t.secret, msgId, ts, body), ...o.headers });
}

function fireGh(t: { id: string; secret: string }, body: string, o: { delivery?: string; event?: string; signature?: string | null } = {}) {
  const headers: Record<string, string> = { 'x-github-delivery': o.delivery ?? randomUUID(), 'x-github-event': o.event ?? 'push' };
  if (o.signature !== null) headers['x-hub-signature-256'] = o.signature ?? ghSig(t.secret, body);
  return fire(t.id, body, headers);
}

const jobCount = () => g.s.store.sqlite.prepare('SELECT count(*) FROM jobs').pluck().get() as number;
/** The stored spec, with the stdin kept in its own column put back as the run frame carries it. */
const storedSpec = (id: string) => {
  const row = g.s.store.sqlite.prepare('SELECT spec, stdin FROM jobs WHERE id = ?').get(id) as { spec: string; stdin: Buffer | null };
  return { ...JSON.parse(row.spec), ...(row.stdin && { stdinBase64: row.stdin.toString('base64') }) };
};

describe('the Standard Webhooks published example', () => {
  const vector = {
    secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
    id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
    ts: 1614265330,
    body: '{"test": 2432232314}',
    signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
  };

  it('is what HMAC-SHA256 over "id.timestamp.body" gives (this file signs the way the specification does)', () => {
    expect(stdSig(vector.secret, vector.id, vector.ts, vector.body)).toBe(vector.signature);
  });

  it('is accepted by a trigger holding that secret at that time, and refused with the body changed by one byte', async () => {
    await start();
    const t = await addTrigger();
    // The published secret, sealed into the row the way the gateway seals its own.
    g.s.store.sqlite.prepare('UPDATE triggers SET secret_enc = ? WHERE id = ?').run(g.s.box.seal(vector.secret, `trigger:${t.id}`), t.id);
    fixedMs = vector.ts * 1000;
    const headers = { 'webhook-id': vector.id, 'webhook-timestamp': String(vector.ts), 'webhook-signature': vector.signature };
    const changed = await fire(t.id, '{"test": 2432232315}', headers);
    expect(changed.status).toBe(401);
    const res = await fire(t.id, vector.body, headers);
    expect(res.status).toBe(202);
    const { id } = await res.json();
    expect(Buffer.from(storedSpec(id).stdinBase64, 'base64').toString()).toBe(vector.body);
    expect(storedSpec(id).env).toMatchObject({ CORRAL_DELIVERY_ID: vector.id, CORRAL_EVENT: '' });
  });
});

describe('managing triggers', () => {
  it('creates a standard trigger by default: its whsec_ secret once, its URL on the request origin', async () => {
    await start();
    const res = await g.req('POST', '/v1/functions/hook/triggers', { token: acme });
    expect(res.status).toBe(201);
    const t = (await res.json()) as Created;
    expect(t).toMatchObject({ kind: 'standard', function: 'hook', url: `http://localhost/hooks/${t.id}` });
    expect(t.id).toMatch(/^trg_[0-9A-Z]{26}$/);
    expect(t.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(Buffer.from(t.secret.slice(6), 'base64')).toHaveLength(32);
    expect(new Date(t.createdAt).getTime()).toBeGreaterThan(0);
  });

  it('creates a github trigger with a hex secret GitHub can take, and uses CORRAL_PUBLIC_URL for the URL', async () => {
    await start({ CORRAL_PUBLIC_URL: 'https://corral.example.com/' });
    const t = await addTrigger('hook', 'github');
    expect(t.kind).toBe('github');
    expect(t.secret).toMatch(/^[0-9a-f]{64}$/);
    expect(t.url).toBe(`https://corral.example.com/hooks/${t.id}`);
  });

  it('lists and gets triggers without any secret, and stores secrets only sealed', async () => {
    await start();
    const a = await addTrigger();
    const b = await addTrigger('hook', 'github');
    const list = await g.req('GET', '/v1/functions/hook/triggers', { token: acme });
    expect(list.status).toBe(200);
    const text = await list.text();
    const body = JSON.parse(text) as { triggers: Array<Record<string, unknown>> };
    expect(body.triggers.map((t) => t.id)).toEqual([a.id, b.id]);
    for (const t of body.triggers) expect(t).not.toHaveProperty('secret');
    const one = await (await g.req('GET', `/v1/functions/hook/triggers/${a.id}`, { token: acme })).text();
    expect(JSON.parse(one)).toMatchObject({ id: a.id, kind: 'standard', url: a.url, rotatedAt: null, previousSecretExpiresAt: null });
    for (const s of [a.secret, a.secret.slice(6), b.secret]) {
      expect(text).not.toContain(s);
      expect(one).not.toContain(s);
    }
    // The rows as SQLite has them: neither the secret nor its key bytes in any column.
    const rows = g.s.store.sqlite.prepare('SELECT * FROM triggers').all() as Array<Record<string, unknown>>;
    const raw = JSON.stringify(rows);
    expect(rows).toHaveLength(2);
    for (const s of [a.secret, a.secret.slice(6), Buffer.from(a.secret.slice(6), 'base64').toString('hex'), b.secret, Buffer.from(b.secret).toString('base64')]) {
      expect(raw).not.toContain(s);
    }
    expect(String(rows[0]!.secret_enc)).toMatch(/^v1:/);
  });

  it('rotates: a new secret shown once, the old one recorded to expire in 24 hours', async () => {
    await start();
    const t = await addTrigger();
    const res = await g.req('POST', `/v1/functions/hook/triggers/${t.id}/rotate`, { token: acme });
    expect(res.status).toBe(200);
    const r = (await res.json()) as Created & { rotatedAt: string; previousSecretExpiresAt: string };
    expect(r.secret).toMatch(/^whsec_/);
    expect(r.secret).not.toBe(t.secret);
    expect(new Date(r.previousSecretExpiresAt).getTime() - new Date(r.rotatedAt).getTime()).toBe(24 * 3600 * 1000);
  });

  it('deletes a trigger: 204, then 404 for it, and its URL answers 401', async () => {
    await start();
    const t = await addTrigger();
    expect((await g.req('DELETE', `/v1/functions/hook/triggers/${t.id}`, { token: acme })).status).toBe(204);
    expect((await g.req('GET', `/v1/functions/hook/triggers/${t.id}`, { token: acme })).status).toBe(404);
    expect((await g.req('DELETE', `/v1/functions/hook/triggers/${t.id}`, { token: acme })).status).toBe(404);
    expect((await fireStd(t, '{}')).status).toBe(401);
  });

  it("answers 404 for another tenant's trigger and function, even under a function of the same name", async () => {
    await start();
    const t = await addTrigger();
    const other = await fnTenant('other');
    await deploy('hook', { command: 'cat' }, other);
    for (const [method, path] of [
      ['GET', `/v1/functions/hook/triggers/${t.id}`],
      ['DELETE', `/v1/functions/hook/triggers/${t.id}`],
      ['POST', `/v1/functions/hook/triggers/${t.id}/rotate`],
    ] as const) {
      expect((await g.req(method, path, { token: other })).status).toBe(404);
    }
    expect((await (await g.req('GET', '/v1/functions/hook/triggers', { token: other })).json()).triggers).toEqual([]);
    // Still there and still acme's.
    expect((await g.req('GET', `/v1/functions/hook/triggers/${t.id}`, { token: acme })).status).toBe(200);
  });

  it('needs functions:write to change triggers and functions:read to list them', async () => {
    await start();
    const t = await addTrigger();
    const reader = await g.token({ tenant: 'acme', scopes: ['functions:read'] });
    const jobsOnly = await g.token({ tenant: 'acme', scopes: ['jobs:read', 'jobs:write'] });
    expect((await g.req('POST', '/v1/functions/hook/triggers', { token: reader, body: {} })).status).toBe(403);
    expect((await g.req('POST', `/v1/functions/hook/triggers/${t.id}/rotate`, { token: reader })).status).toBe(403);
    expect((await g.req('DELETE', `/v1/functions/hook/triggers/${t.id}`, { token: reader })).status).toBe(403);
    expect((await g.req('GET', '/v1/functions/hook/triggers', { token: reader })).status).toBe(200);
    expect((await g.req('GET', '/v1/functions/hook/triggers', { token: jobsOnly })).status).toBe(403);
    expect((await g.req('GET', '/v1/functions/hook/triggers')).status).toBe(401);
  });

  it('refuses a bad kind, an unknown field, a missing function and a 21st trigger', async () => {
    await start();
    const bad = await g.req('POST', '/v1/functions/hook/triggers', { token: acme, body: { kind: 'gitlab' } });
    expect(bad.status).toBe(400);
    expect((await problemOf(bad)).fields).toEqual(['kind']);
    expect((await g.req('POST', '/v1/functions/hook/triggers', { token: acme, body: { kind: 'github', secret: 'mine' } })).status).toBe(400);
    expect((await g.req('POST', '/v1/functions/hook/triggers', { token: acme, raw: '{"kind":', headers: { 'content-type': 'application/json' } })).status).toBe(400);
    expect((await g.req('POST', '/v1/functions/nope/triggers', { token: acme, body: {} })).status).toBe(404);
    expect((await g.req('GET', '/v1/functions/hook/triggers/trg_nope', { token: acme })).status).toBe(400);
    for (let i = 0; i < 20; i++) await addTrigger();
    const full = await g.req('POST', '/v1/functions/hook/triggers', { token: acme, body: {} });
    expect(full.status).toBe(422);
    expect((await problemOf(full)).fields).toEqual(['function']);
  });
});

describe('POST /hooks/:id with Standard Webhooks signatures', () => {
  it("queues the function with the raw body as stdin and the event and delivery id in its env, answering 202 with the job's id", async () => {
    await start();
    const t = await addTrigger();
    const body = '{"type":"invoice.paid","data":{"amount":12}}';
    const res = await fireStd(t, body, { msgId: 'msg_one' });
    expect(res.status).toBe(202);
    const { id } = await res.json();
    expect(id).toMatch(/^job_/);
    const spec = storedSpec(id);
    expect(Buffer.from(spec.stdinBase64, 'base64').toString()).toBe(body);
    expect(spec.env).toMatchObject({ CORRAL_EVENT: 'invoice.paid', CORRAL_DELIVERY_ID: 'msg_one', CORRAL_TRIGGER_ID: t.id, CORRAL_CONTENT_TYPE: 'application/json' });
    const job = await (await g.req('GET', `/v1/jobs/${id}`, { token: acme })).json();
    expect(job).toMatchObject({ id, function: 'hook', state: 'queued' });
  });

  it('passes binary bodies through byte for byte and sanitizes and bounds the event name', async () => {
    await start();
    const t = await addTrigger();
    const binary = Buffer.from([0, 255, 0x7b, 10, 13, 128, 1]);
    const msgId = 'msg_bin';
    const ts = nowSeconds();
    const res = await fire(t.id, binary, { 'content-type': 'application/octet-stream', 'webhook-id': msgId, 'webhook-timestamp': String(ts), 'webhook-signature': stdSig(t.secret, msgId, ts, binary) });
    expect(res.status).toBe(202);
    const spec = storedSpec((await res.json()).id);
    expect(Buffer.from(spec.stdinBase64, 'base64')).toEqual(binary);
    expect(spec.env.CORRAL_EVENT).toBe('');
    const hostile = await fireStd(t, JSON.stringify({ type: `a b;$(rm -rf /)\n${'x'.repeat(500)}` }));
    const event = storedSpec((await hostile.json()).id).env.CORRAL_EVENT as string;
    expect(event).toMatch(/^[A-Za-z0-9._:/-]{128}$/);
    expect(event.startsWith('a_b___rm_-rf_/__x')).toBe(true);
  });

  it('accepts a header with several signatures when one is right, and refuses one where none is', async () => {
    await start();
    const t = await addTrigger();
    const body = '{"n":1}';
    const ts = nowSeconds();
    const wrong = stdSig('whsec_' + Buffer.alloc(32, 7).toString('base64'), 'msg_multi', ts, body);
    const right = stdSig(t.secret, 'msg_multi', ts, body);
    expect((await fireStd(t, body, { msgId: 'msg_multi', ts, signature: `${wrong} v1,not-base64!! ${wrong}` })).status).toBe(401);
    // Right signature under another version tag is not a v1 signature.
    expect((await fireStd(t, body, { msgId: 'msg_multi', ts, signature: `v1a,${right.slice(3)}` })).status).toBe(401);
    const ok = await fireStd(t, body, { msgId: 'msg_multi', ts, signature: `${wrong} ${right}` });
    expect(ok.status).toBe(202);
  });

  it('accepts timestamps exactly 300 s from now either way and refuses 301 s', async () => {
    await start();
    const t = await addTrigger();
    fixedMs = 1_800_000_000_000;
    const now = fixedMs / 1000;
    for (const ts of [now - 300, now + 300]) expect((await fireStd(t, '{}', { ts })).status).toBe(202);
    for (const ts of [now - 301, now + 301]) expect((await fireStd(t, '{}', { ts })).status).toBe(401);
    expect((await fireStd(t, '{}', { ts: now, headers: { 'webhook-timestamp': 'soon' } })).status).toBe(401);
  });

  it('refuses a body changed by one byte, a signature for another id, and each missing header', async () => {
    await start();
    const t = await addTrigger();
    const ts = nowSeconds();
    const body = '{"amount":100}';
    const sig = stdSig(t.secret, 'msg_x', ts, body);
    expect((await fire(t.id, '{"amount":900}', { 'webhook-id': 'msg_x', 'webhook-timestamp': String(ts), 'webhook-signature': sig })).status).toBe(401);
    expect((await fire(t.id, body, { 'webhook-id': 'msg_y', 'webhook-timestamp': String(ts), 'webhook-signature': sig })).status).toBe(401);
    expect((await fire(t.id, body, { 'webhook-timestamp': String(ts), 'webhook-signature': sig })).status).toBe(401);
    expect((await fire(t.id, body, { 'webhook-id': 'msg_x', 'webhook-signature': sig })).status).toBe(401);
    expect((await fire(t.id, body, { 'webhook-id': 'msg_x', 'webhook-timestamp': String(ts) })).status).toBe(401);
    expect(jobCount()).toBe(0);
    expect((await fire(t.id, body, { 'webhook-id': 'msg_x', 'webhook-timestamp': String(ts), 'webhook-signature': sig })).status).toBe(202);
  });

  it('answers a replayed webhook-id with the job it made, one job in the database, even when the copies arrive together', async () => {
    await start();
    const t = await addTrigger();
    const first = await (await fireStd(t, '{"n":1}', { msgId: 'msg_replay' })).json();
    // A sender's retry: same id, new timestamp, signed again.
    offsetMs = 60_000;
    const again = await fireStd(t, '{"n":1}', { msgId: 'msg_replay' });
    expect(again.status).toBe(202);
    expect((await again.json()).id).toBe(first.id);
    expect(jobCount()).toBe(1);
    const together = await Promise.all(Array.from({ length: 8 }, () => fireStd(t, '{"n":2}', { msgId: 'msg_together' })));
    const ids = await Promise.all(together.map(async (r) => (expect(r.status).toBe(202), (await r.json()).id as string)));
    expect(new Set(ids).size).toBe(1);
    expect(jobCount()).toBe(2);
    // The record survives the job's deletion: a replay does not run it again.
    expect((await g.req('DELETE', `/v1/jobs/${first.id}`, { token: acme })).status).toBe(204);
    expect((await (await fireStd(t, '{"n":1}', { msgId: 'msg_replay' })).json()).id).toBe(first.id);
    expect(jobCount()).toBe(1);
  });

  it('keeps delivery ids per trigger: the same webhook-id on two triggers makes two jobs', async () => {
    await start();
    const a = await addTrigger();
    const b = await addTrigger();
    const ja = await (await fireStd(a, '{}', { msgId: 'msg_shared' })).json();
    const jb = await (await fireStd(b, '{}', { msgId: 'msg_shared' })).json();
    expect(ja.id).not.toBe(jb.id);
  });

  it('answers an unknown trigger and a bad signature alike: same status, same problem body, same headers', async () => {
    await start();
    const t = await addTrigger();
    const strip = async (r: Response) => {
      const { requestId: _r, ...body } = (await r.json()) as Record<string, unknown>;
      return { status: r.status, type: r.headers.get('content-type'), www: r.headers.get('www-authenticate'), body };
    };
    const bad = await strip(await fireStd(t, '{}', { signature: stdSig('whsec_' + Buffer.alloc(32).toString('base64'), 'm', 1, '{}') }));
    const unknown = await strip(await fireStd({ id: 'trg_01J9Z8Q4W3X2V1T0S9R8Q7P6N5', secret: t.secret }, '{}'));
    const malformed = await strip(await fireStd({ id: 'not-a-trigger-id', secret: t.secret }, '{}'));
    const stale = await strip(await fireStd(t, '{}', { ts: nowSeconds() - 3600 }));
    const missing = await strip(await fire(t.id, '{}', {}));
    expect(bad.status).toBe(401);
    expect(bad.body).toMatchObject({ type: '/problems/unauthorized', status: 401, errors: [] });
    for (const other of [unknown, malformed, stale, missing]) expect(other).toEqual(bad);
  });

  it('takes as long for an unknown trigger as for a bad signature (same lookup, decryptions and HMACs)', async () => {
    await start();
    const t = await addTrigger();
    // The service's own work, without the HTTP layer around it (which is the same for both).
    const body = Buffer.alloc(1024 * 1024, 'x');
    const ts = String(nowSeconds());
    const headers: Record<string, string> = { 'webhook-id': 'msg_t', 'webhook-timestamp': ts, 'webhook-signature': stdSig('whsec_' + Buffer.alloc(32, 1).toString('base64'), 'msg_t', Number(ts), body) };
    const sample = async (id: string) => {
      const started = performance.now();
      await expect(g.s.triggers.fire(id, { header: (n) => headers[n], body })).rejects.toThrow('the signature is missing or not valid');
      return performance.now() - started;
    };
    const known: number[] = [];
    const unknown: number[] = [];
    for (let i = 0; i < 5; i++) await sample(t.id);
    for (let i = 0; i < 40; i++) {
      known.push(await sample(t.id));
      unknown.push(await sample('trg_01J9Z8Q4W3X2V1T0S9R8Q7P6N5'));
    }
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1]!;
    // Two HMACs over 1 MiB dominate: an unknown id that skipped them would take a small fraction of the time.
    const ratio = median(unknown) / median(known);
    expect(ratio).toBeGreaterThan(0.75);
    expect(ratio).toBeLessThan(1.33);
  });

  it('refuses a body over the gateway body limit with 413', async () => {
    await start({ CORRAL_BODY_LIMIT: '1024' });
    const t = await addTrigger();
    expect((await fireStd(t, 'x'.repeat(1025))).status).toBe(413);
    expect((await fireStd(t, 'x'.repeat(1000))).status).toBe(202);
  });
});

describe('POST /hooks/:id with GitHub signatures', () => {
  it('accepts X-Hub-Signature-256 over the raw body with the event and delivery in the env', async () => {
    await start();
    const t = await addTrigger('hook', 'github');
    const body = JSON.stringify({ ref: 'refs/heads/main', commits: [] }, null, 2);
    const delivery = randomUUID();
    const res = await fireGh(t, body, { delivery, event: 'push' });
    expect(res.status).toBe(202);
    const spec = storedSpec((await res.json()).id);
    expect(Buffer.from(spec.stdinBase64, 'base64').toString()).toBe(body);
    expect(spec.env).toMatchObject({ CORRAL_EVENT: 'push', CORRAL_DELIVERY_ID: delivery });
  });

  it('refuses a wrong, malformed or missing signature, a changed body and Standard Webhooks headers, alike', async () => {
    await start();
    const t = await addTrigger('hook', 'github');
    const body = '{"zen":"Keep it logically awesome."}';
    const answers = [
      await fireGh(t, body, { signature: ghSig('not the secret', body) }),
      await fireGh(t, body, { signature: ghSig(t.secret, body).toUpperCase() }),
      await fireGh(t, body, { signature: ghSig(t.secret, body).replace('sha256=', 'sha1=') }),
      await fireGh(t, body, { signature: ghSig(t.secret, body) + '00' }),
      await fireGh(t, body, { signature: null }),
      await fireGh(t, body.replace('awesome', 'awesomE'), { signature: ghSig(t.secret, body) }),
      await fireStd(t, body),
    ];
    for (const res of answers) {
      expect(res.status).toBe(401);
      expect((await problemOf(res)).body.type).toBe('/problems/unauthorized');
    }
    expect(jobCount()).toBe(0);
  });

  it('answers a replayed X-GitHub-Delivery with the same job, and a good signature without a delivery id with 400', async () => {
    await start();
    const t = await addTrigger('hook', 'github');
    const delivery = randomUUID();
    const a = await (await fireGh(t, '{"action":"opened"}', { delivery, event: 'issues' })).json();
    const again = await fireGh(t, '{"action":"opened"}', { delivery, event: 'issues' });
    expect(again.status).toBe(202);
    expect((await again.json()).id).toBe(a.id);
    expect(jobCount()).toBe(1);
    // GitHub signs the body only: the same signed body resent with a fresh delivery id and another
    // event is the same delivery, not a new job (and cannot turn a ping into a push).
    const forged = await fireGh(t, '{"action":"opened"}', { delivery: randomUUID(), event: 'push' });
    expect(forged.status).toBe(202);
    expect((await forged.json()).id).toBe(a.id);
    expect(jobCount()).toBe(1);
    const body = '{}';
    const noDelivery = await fire(t.id, body, { 'x-hub-signature-256': ghSig(t.secret, body), 'x-github-event': 'ping' });
    expect(noDelivery.status).toBe(400);
    expect((await problemOf(noDelivery)).fields).toEqual(['x-github-delivery']);
  });
});

describe('rotation', () => {
  it('keeps the old secret valid for 24 hours after a rotation and refuses it after', async () => {
    await start();
    for (const kind of ['standard', 'github'] as const) {
      offsetMs = 0;
      const t = await addTrigger('hook', kind);
      const rotated = (await (await g.req('POST', `/v1/functions/hook/triggers/${t.id}/rotate`, { token: acme })).json()) as Created;
      const oldOne = { id: t.id, secret: t.secret };
      const newOne = { id: t.id, secret: rotated.secret };
      const send = (k: { id: string; secret: string }) => (kind === 'github' ? fireGh(k, '{"r":1}') : fireStd(k, '{"r":1}'));
      expect((await send(oldOne)).status).toBe(202);
      expect((await send(newOne)).status).toBe(202);
      offsetMs = 24 * 3600 * 1000 - 5_000;
      expect((await send(oldOne)).status).toBe(202);
      offsetMs = 24 * 3600 * 1000 + 1_000;
      expect((await send(oldOne)).status).toBe(401);
      expect((await send(newOne)).status).toBe(202);
    }
  });

  it('a second rotation retires the first secret at once: only the current and the one before verify', async () => {
    await start();
    const t = await addTrigger();
    const r1 = (await (await g.req('POST', `/v1/functions/hook/triggers/${t.id}/rotate`, { token: acme })).json()) as Created;
    const r2 = (await (await g.req('POST', `/v1/functions/hook/triggers/${t.id}/rotate`, { token: acme })).json()) as Created;
    expect((await fireStd({ id: t.id, secret: t.secret }, '{}')).status).toBe(401);
    expect((await fireStd({ id: t.id, secret: r1.secret }, '{}')).status).toBe(202);
    expect((await fireStd({ id: t.id, secret: r2.secret }, '{}')).status).toBe(202);
  });
});

describe('quotas and lifetimes', () => {
  it('answers 429 with Retry-After naming firesPerMinute past the quota; replays do not count; null is unlimited', async () => {
    await start({}, { firesPerMinute: 2 });
    const t = await addTrigger();
    expect((await fireStd(t, '{}', { msgId: 'msg_a' })).status).toBe(202);
    expect((await fireStd(t, '{}', { msgId: 'msg_b' })).status).toBe(202);
    expect((await fireStd(t, '{}', { msgId: 'msg_a' })).status).toBe(202);
    const res = await fireStd(t, '{}', { msgId: 'msg_c' });
    expect(res.status).toBe(429);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    const p = await problemOf(res);
    expect(p.fields).toEqual(['firesPerMinute']);
    expect(p.body.detail).toMatch(/trigger fires a minute/);
    expect(p.body.type).toBe('/problems/quota/firesPerMinute');
    expect(jobCount()).toBe(2);
    // Invoking over the API is not a fire.
    expect((await g.req('POST', '/v1/functions/hook/invoke', { token: acme, raw: 'x' })).status).toBe(202);
    expect((await g.req('PATCH', '/v1/tenants/acme', { token: g.admin, body: { quota: { firesPerMinute: null } } })).status).toBe(200);
    for (let i = 0; i < 5; i++) expect((await fireStd(t, '{}')).status).toBe(202);
  });

  it('takes firesPerMinute as a positive integer or null, never 0', async () => {
    await start();
    for (const v of [0, -1, 1.5, '10']) {
      const res = await g.req('PATCH', '/v1/tenants/acme', { token: g.admin, body: { quota: { firesPerMinute: v } } });
      expect(res.status).toBe(400);
      expect((await problemOf(res)).fields).toEqual(['quota.firesPerMinute']);
    }
    const t = await (await g.req('GET', '/v1/tenants/acme', { token: g.admin })).json();
    expect(t.quota.firesPerMinute).toBe(600);
  });

  it('keeps the env a fire adds within bounds: longest delivery id, event and content type; longer ids refused', async () => {
    await start();
    const t = await addTrigger();
    const longId = 'm'.repeat(256);
    const type = 'application/vnd.' + 'x'.repeat(1024 - 'application/vnd.'.length);
    const res = await fireStd(t, JSON.stringify({ type: 'e'.repeat(1000) }), { msgId: longId, headers: { 'content-type': type } });
    expect(res.status).toBe(202);
    const env = storedSpec((await res.json()).id).env;
    expect(env).toMatchObject({ CORRAL_DELIVERY_ID: longId, CORRAL_EVENT: 'e'.repeat(128), CORRAL_CONTENT_TYPE: type });
    // Over the bounds: a standard id that long cannot verify; a content type too long or with control characters is dropped.
    expect((await fireStd(t, '{}', { msgId: 'm'.repeat(257) })).status).toBe(401);
    expect((await fireStd(t, '{}', { msgId: 'msg with space' })).status).toBe(401);
    const odd = await fireStd(t, '{}', { headers: { 'content-type': type + 'x' } });
    expect(storedSpec((await odd.json()).id).env.CORRAL_CONTENT_TYPE).toBe('');
    const gh = await addTrigger('hook', 'github');
    const tooLong = await fireGh(gh, '{}', { delivery: 'd'.repeat(257) });
    expect(tooLong.status).toBe(400);
  });

  it("counts fires against maxQueued", async () => {
    await start({}, { maxQueued: 1 });
    const t = await addTrigger();
    expect((await fireStd(t, '{}')).status).toBe(202);
    const res = await fireStd(t, '{}');
    expect(res.status).toBe(429);
    const p = await problemOf(res);
    expect(p.fields).toEqual(['maxQueued']);
    expect(p.body.type).toBe('/problems/quota/maxQueued');
  });

  it("answers 401 for a deleted function's trigger: the trigger and its deliveries went with it", async () => {
    await start();
    const t = await addTrigger();
    expect((await fireStd(t, '{}', { msgId: 'msg_before' })).status).toBe(202);
    expect((await g.req('DELETE', '/v1/functions/hook', { token: acme })).status).toBe(204);
    expect((await fireStd(t, '{}')).status).toBe(401);
    expect(g.s.store.sqlite.prepare('SELECT count(*) FROM triggers').pluck().get()).toBe(0);
    expect(g.s.store.sqlite.prepare('SELECT count(*) FROM trigger_deliveries').pluck().get()).toBe(0);
    // A function saved again under the name does not bring the old trigger back.
    await deploy('hook', { command: 'cat' });
    expect((await fireStd(t, '{}', { msgId: 'msg_before' })).status).toBe(401);
  });

  it('answers a fire as soon as the job is queued on disk, well under 100 ms (median of 20)', async () => {
    await start();
    const t = await addTrigger();
    const times: number[] = [];
    for (let i = 0; i < 20; i++) {
      const started = performance.now();
      expect((await fireStd(t, JSON.stringify({ type: 'tick', i }))).status).toBe(202);
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    expect(times[10]!, `fire times in ms: ${times.map((t) => t.toFixed(1)).join(' ')}`).toBeLessThan(100);
  });
});

describe('OpenAPI', () => {
  it('documents the trigger routes, and the hooks route as secured by signature headers rather than a bearer token', async () => {
    await start();
    const doc = await (await g.req('GET', '/openapi.json')).json();
    for (const p of ['/v1/functions/{name}/triggers', '/v1/functions/{name}/triggers/{id}', '/v1/functions/{name}/triggers/{id}/rotate', '/hooks/{triggerId}']) {
      expect(doc.paths).toHaveProperty([p]);
    }
    const hook = doc.paths['/hooks/{triggerId}'].post;
    expect(hook.security).toEqual([{ standardWebhooks: [] }, { githubSignature: [] }]);
    expect(doc.components.securitySchemes).toMatchObject({ standardWebhooks: { in: 'header', name: 'webhook-signature' }, githubSignature: { in: 'header', name: 'X-Hub-Signature-256' } });
    expect(doc.paths['/v1/functions/{name}/triggers'].post.security).toEqual([{ bearer: [] }]);
  });
});
