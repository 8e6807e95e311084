import { createHmac } from 'node:crypto';
import { mkdtempSync, readlinkSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { newDeliverer } from '../src/callbacks/index.js';
import { DEFAULT_SCHEDULE, backoffMs, retryAfterMs } from '../src/callbacks/schedule.js';
import type { CallbackTuning } from '../src/callbacks/index.js';
import { loadGatewayConfig } from '../src/config.js';
import { GroupCommit } from '../src/db/group-commit.js';
import { startGateway, type Gateway } from '../src/gateway.js';
import { mintToken } from '../src/auth/tokens.js';
import { SECRET, testGateway, type TestGateway } from './fixtures.js';

/**
 * Job-end callbacks: an outbox row per end, delivered signed by a loop that retries on a
 * schedule, against a real receiver on loopback. Signatures are checked here with node:crypto
 * alone, not with the code under test.
 */

interface Hit {
  headers: IncomingMessage['headers'];
  url: string;
  body: string;
  at: number;
}

type Handler = (req: IncomingMessage, res: ServerResponse, hit: Hit) => void;

/** A callback receiver on 127.0.0.1 whose answer each test chooses. */
class Receiver {
  hits: Hit[] = [];
  handler: Handler = (_req, res) => res.end('ok');
  server: Server;
  port = 0;
  constructor() {
    this.server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => {
        const hit = { headers: req.headers, url: req.url ?? '', body, at: Date.now() };
        this.hits.push(hit);
        this.handler(req, res, hit);
      });
    });
  }
  listen(port = 0): Promise<void> {
    return new Promise((r) =>
      this.server.listen(port, '127.0.0.1', () => {
        this.port = (this.server.address() as { port: number }).port;
        r();
      }),
    );
  }
  url(path = '/hook'): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }
  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** Standard Webhooks, computed independently: HMAC-SHA256 of `id.timestamp.body` with the bytes after `whsec_`. */
function expectedSignature(secret: string, id: string, ts: string, body: string): string {
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  return 'v1,' + createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest('base64');
}

function signaturesOf(hit: Hit): string[] {
  return String(hit.headers['webhook-signature']).split(' ');
}

function verifies(hit: Hit, secret: string): boolean {
  const sig = expectedSignature(secret, String(hit.headers['webhook-id']), String(hit.headers['webhook-timestamp']), hit.body);
  return signaturesOf(hit).includes(sig);
}

let rx: Receiver;
let g: TestGateway | undefined;
let now: number;
const clock = () => now;

beforeEach(async () => {
  rx = new Receiver();
  await rx.listen();
  // Ahead of the wall clock, which stamps a job's submission: the machine claims only jobs due by its clock.
  now = Date.now() + 60_000;
});
afterEach(async () => {
  await g?.close();
  g = undefined;
  await rx.close();
});

/** A gateway whose callbacks may reach loopback, on an injected clock, with jitter fixed at its ceiling. */
async function gateway(tuning: CallbackTuning = {}): Promise<TestGateway> {
  g = await testGateway({ CORRAL_CALLBACK_PRIVATE: 'true' }, { clock, callbacks: { random: () => 0.999999, timeoutMs: 2000, ...tuning } });
  return g;
}

/** Queues a job with `callbackUrl` and ends it (succeeded) through the machine; returns its id. */
async function endJob(gw: TestGateway, token: string, callbackUrl: string): Promise<string> {
  const res = await gw.req('POST', '/v1/jobs', { token, body: { command: 'true', callbackUrl } });
  expect(res.status).toBe(202);
  const id = (await res.json()).id as string;
  const c = gw.s.machine.claim(id, 'a1')!;
  gw.s.machine.finish(id, c.fence, { exitCode: 0, signal: null, reason: 'exit' });
  return id;
}

async function deliveriesOf(gw: TestGateway, token: string, jobId: string) {
  const res = await gw.req('GET', `/v1/jobs/${jobId}/deliveries`, { token });
  expect(res.status).toBe(200);
  return (await res.json()).deliveries as Array<{
    id: string;
    url: string;
    state: string;
    nextAt: string | null;
    lastStatus: number | null;
    lastError: string | null;
    tries: Array<{ n: number; at: string; status: number | null; error: string | null; durationMs: number }>;
  }>;
}

const secretOf = async (gw: TestGateway, token: string) => (await (await gw.req('GET', '/v1/callback-secret', { token })).json()).secret as string;

describe('a job end is delivered signed', () => {
  it('POSTs {type, timestamp, data} once, with the Standard Webhooks headers, verifiable with the tenant secret', async () => {
    const gw = await gateway();
    const t = await gw.tenant('acme');
    const secret = await secretOf(gw, t);
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    const jobId = await endJob(gw, t, rx.url('/done?x=1'));
    expect(await gw.s.callbacks.deliverer.runOnce()).toBe(1);

    expect(rx.hits).toHaveLength(1);
    const hit = rx.hits[0]!;
    const [d] = await deliveriesOf(gw, t, jobId);
    expect(hit.url).toBe('/done?x=1');
    expect(hit.headers['content-type']).toBe('application/json');
    expect(hit.headers['user-agent']).toBe('corral-callback/1');
    expect(hit.headers['webhook-id']).toBe(d!.id);
    expect(Number(hit.headers['webhook-timestamp'])).toBe(Math.floor(now / 1000));
    expect(signaturesOf(hit)).toHaveLength(1);
    expect(verifies(hit, secret)).toBe(true);
    // One byte changed in the body no longer verifies.
    expect(verifies({ ...hit, body: hit.body.replace('"succeeded"', '"succeedeD"') }, secret)).toBe(false);

    const body = JSON.parse(hit.body);
    expect(body).toMatchObject({ type: 'job.ended', data: { id: jobId, state: 'succeeded', exitCode: 0, tenant: 'acme' } });
    expect(new Date(body.timestamp).getTime()).toBe(now);
    expect(d).toMatchObject({ state: 'delivered', lastStatus: 200, lastError: null, nextAt: null, url: rx.url('/done?x=1') });
    expect(d!.tries).toEqual([{ n: 1, at: new Date(now).toISOString(), status: 200, error: null, durationMs: expect.any(Number) }]);

    // Nothing more is sent, however much later the loop runs.
    now += 7 * 86400_000;
    expect(await gw.s.callbacks.deliverer.runOnce()).toBe(0);
    expect(rx.hits).toHaveLength(1);
  });

  it('a queued job cancelled through the API gets its delivery too; a job without callbackUrl gets none', async () => {
    const gw = await gateway();
    const t = await gw.tenant('acme');
    const queued = (await (await gw.req('POST', '/v1/jobs', { token: t, body: { command: 'true', callbackUrl: rx.url() } })).json()).id;
    const plain = (await (await gw.req('POST', '/v1/jobs', { token: t, body: { command: 'true' } })).json()).id;
    expect((await gw.req('POST', `/v1/jobs/${queued}/cancel`, { token: t })).status).toBe(202);
    expect((await gw.req('POST', `/v1/jobs/${plain}/cancel`, { token: t })).status).toBe(202);
    await gw.s.callbacks.deliverer.runOnce();
    expect(rx.hits.map((h) => JSON.parse(h.body).data)).toMatchObject([{ id: queued, state: 'cancelled' }]);
    expect(await deliveriesOf(gw, t, plain)).toEqual([]);
  });

  it("a function's callbackUrl reaches the jobs it is invoked as", async () => {
    const gw = await gateway();
    await gw.tenant('acme');
    const t = await gw.token({ tenant: 'acme', scopes: ['jobs:read', 'jobs:write', 'functions:read', 'functions:write'] });
    expect((await gw.req('PUT', '/v1/functions/hello', { token: t, body: { command: 'true', callbackUrl: rx.url('/fn') } })).status).toBe(201);
    const job = await (await gw.req('POST', '/v1/functions/hello/invoke', { token: t, raw: 'in', headers: { 'content-type': 'text/plain' } })).json();
    expect(job.callbackUrl).toBe(rx.url('/fn'));
    const c = gw.s.machine.claim(job.id, 'a1')!;
    gw.s.machine.finish(job.id, c.fence, { exitCode: 3, signal: null, reason: 'exit' });
    await gw.s.callbacks.deliverer.runOnce();
    expect(rx.hits.map((h) => [h.url, JSON.parse(h.body).data.function, JSON.parse(h.body).data.state])).toEqual([['/fn', 'hello', 'failed']]);
  });
});

describe('retries', () => {
  it('a 500 is tried again after 5 s, then 10 s (backoff at its jitter ceiling), with the same webhook-id, until a 2xx', async () => {
    const gw = await gateway();
    const t = await gw.tenant('acme');
    let n = 0;
    rx.handler = (_req, res) => (++n <= 2 ? res.writeHead(500).end('database down') : res.end('ok'));
    const jobId = await endJob(gw, t, rx.url());
    const t0 = now;
    const d = gw.s.callbacks.deliverer;
    await d.runOnce();
    let [row] = await deliveriesOf(gw, t, jobId);
    expect(row).toMatchObject({ state: 'pending', lastStatus: 500, lastError: 'the receiver answered 500: database down' });
    expect(Date.parse(row!.nextAt!) - t0).toBe(4999); // floor(0.999999 · 5000)

    now = t0 + 4998;
    expect(await d.runOnce()).toBe(0);
    now = t0 + 4999;
    expect(await d.runOnce()).toBe(1);
    [row] = await deliveriesOf(gw, t, jobId);
    expect(Date.parse(row!.nextAt!) - now).toBe(9999);
    now += 9998;
    expect(await d.runOnce()).toBe(0);
    now += 1;
    expect(await d.runOnce()).toBe(1);

    [row] = await deliveriesOf(gw, t, jobId);
    expect(row).toMatchObject({ state: 'delivered', lastStatus: 200, lastError: null });
    expect(row!.tries.map((x) => x.status)).toEqual([500, 500, 200]);
    expect(new Set(rx.hits.map((h) => h.headers['webhook-id']))).toEqual(new Set([row!.id]));
    // Each try is signed afresh with its own timestamp.
    expect(rx.hits.map((h) => Number(h.headers['webhook-timestamp']))).toEqual(row!.tries.map((x) => Math.floor(Date.parse(x.at) / 1000)));
    expect(row!.tries.map((x) => Date.parse(x.at) - t0)).toEqual([0, 4999, 4999 + 9999]);
  });

  it('full jitter: each wait is drawn in [1 s, min(1 h, 5 s · 2^(n-1))]', () => {
    const s = DEFAULT_SCHEDULE;
    expect(backoffMs(1, s, () => 0)).toBe(1000);
    expect(backoffMs(1, s, () => 0.5)).toBe(2500);
    expect(backoffMs(4, s, () => 0.5)).toBe(20_000);
    expect(backoffMs(11, s, () => 0.999999)).toBe(3_599_996);
    expect(backoffMs(40, s, () => 0.999999)).toBe(3_599_996);
    for (let n = 1; n <= 12; n++) {
      const w = backoffMs(n, s, Math.random);
      expect(w).toBeGreaterThanOrEqual(1000);
      expect(w).toBeLessThanOrEqual(Math.min(3_600_000, 5000 * 2 ** (n - 1)));
    }
  });

  it('gives up as failed when the schedule ends', async () => {
    const gw = await gateway({ schedule: { maxTries: 3 } });
    const t = await gw.tenant('acme');
    rx.handler = (_req, res) => res.writeHead(502).end();
    const jobId = await endJob(gw, t, rx.url());
    for (let i = 0; i < 5; i++) {
      await gw.s.callbacks.deliverer.runOnce();
      now += 3_600_000;
    }
    const [row] = await deliveriesOf(gw, t, jobId);
    expect(rx.hits).toHaveLength(3);
    expect(row).toMatchObject({ state: 'failed', nextAt: null, lastStatus: 502, lastError: 'the receiver answered 502; giving up after 3 tries' });
  });

  it('429 with Retry-After: 2 is not tried again before 2 s', async () => {
    const gw = await gateway();
    const t = await gw.tenant('acme');
    let n = 0;
    rx.handler = (_req, res) => (++n === 1 ? res.writeHead(429, { 'retry-after': '2' }).end() : res.end());
    const jobId = await endJob(gw, t, rx.url());
    const t0 = now;
    await gw.s.callbacks.deliverer.runOnce();
    expect(Date.parse((await deliveriesOf(gw, t, jobId))[0]!.nextAt!)).toBe(t0 + 2000);
    now = t0 + 1999;
    expect(await gw.s.callbacks.deliverer.runOnce()).toBe(0);
    now = t0 + 2000;
    expect(await gw.s.callbacks.deliverer.runOnce()).toBe(1);
    expect((await deliveriesOf(gw, t, jobId))[0]!.tries.map((x) => x.status)).toEqual([429, 200]);
  });

  it('503 with Retry-After as an HTTP date waits until then; a longer one is cut to 1 h; others are ignored', async () => {
    const gw = await gateway();
    const t = await gw.tenant('acme');
    const when = new Date(Math.ceil(now / 1000) * 1000 + 90_000);
    rx.handler = (_req, res) => res.writeHead(503, { 'retry-after': when.toUTCString() }).end();
    const jobId = await endJob(gw, t, rx.url());
    await gw.s.callbacks.deliverer.runOnce();
    expect(Date.parse((await deliveriesOf(gw, t, jobId))[0]!.nextAt!)).toBe(when.getTime());

    expect(retryAfterMs('86400', now, DEFAULT_SCHEDULE)).toBe(3_600_000);
    expect(retryAfterMs('0', now, DEFAULT_SCHEDULE)).toBe(1000);
    expect(retryAfterMs('-5', now, DEFAULT_SCHEDULE)).toBeUndefined();
    expect(retryAfterMs('12345678901234', now, DEFAULT_SCHEDULE)).toBeUndefined();
    expect(retryAfterMs('soon', now, DEFAULT_SCHEDULE)).toBeUndefined();
  });

  it('a 302 is a failure and its Location receives nothing', async () => {
    const gw = await gateway();
    const t = await gw.tenant('acme');
    rx.handler = (req, res) => (req.url === '/moved' ? res.writeHead(302, { location: rx.url('/landed') }).end() : res.end());
    const jobId = await endJob(gw, t, rx.url('/moved'));
    await gw.s.callbacks.deliverer.runOnce();
    expect(rx.hits.map((h) => h.url)).toEqual(['/moved']);
    expect((await deliveriesOf(gw, t, jobId))[0]).toMatchObject({ state: 'pending', lastStatus: 302, lastError: 'the receiver answered 302 (redirects are not followed)' });
  });

  it('410 ends the delivery as gone, records why, and it is never tried again', async () => {
    const gw = await gateway();
    const t = await gw.tenant('acme');
    rx.handler = (_req, res) => res.writeHead(410).end('subscription\r\nremoved');
    const jobId = await endJob(gw, t, rx.url());
    await gw.s.callbacks.deliverer.runOnce();
    for (let i = 0; i < 3; i++) {
      now += 86400_000;
      expect(await gw.s.callbacks.deliverer.runOnce()).toBe(0);
    }
    expect(rx.hits).toHaveLength(1);
    expect((await deliveriesOf(gw, t, jobId))[0]).toMatchObject({ state: 'gone', nextAt: null, lastStatus: 410, lastError: 'the receiver answered 410 Gone: subscription removed' });
  });
});

describe('hostile receivers', () => {
  it('a receiver that never answers costs one timeout, recorded, and the delivery stays pending', async () => {
    const gw = await gateway({ timeoutMs: 300 });
    const t = await gw.tenant('acme');
    rx.handler = () => {}; // reads the request, never answers
    const jobId = await endJob(gw, t, rx.url());
    await gw.s.callbacks.deliverer.runOnce();
    const [row] = await deliveriesOf(gw, t, jobId);
    expect(row).toMatchObject({ state: 'pending', lastStatus: null, lastError: 'timed out after 300 ms' });
    expect(row!.tries[0]!.durationMs).toBeGreaterThanOrEqual(295);
    expect(row!.tries[0]!.durationMs).toBeLessThan(1500);
  });

  it('a receiver that trickles its headers a byte at a time is cut off by the whole-try deadline, not an idle timer', async () => {
    const sockets = new Set<Socket>();
    const trickle: NetServer = createNetServer((sock) => {
      sockets.add(sock);
      const text = 'HTTP/1.1 200 OK\r\nX-Slow: ' + 'a'.repeat(10_000);
      let i = 0;
      const timer = setInterval(() => (i < text.length ? sock.write(text[i++]!) : undefined), 20);
      sock.on('close', () => clearInterval(timer));
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => trickle.listen(0, '127.0.0.1', () => r()));
    try {
      const gw = await gateway({ timeoutMs: 500 });
      const t = await gw.tenant('acme');
      const jobId = await endJob(gw, t, `http://127.0.0.1:${(trickle.address() as { port: number }).port}/`);
      await gw.s.callbacks.deliverer.runOnce();
      const [row] = await deliveriesOf(gw, t, jobId);
      expect(row).toMatchObject({ state: 'pending', lastStatus: null, lastError: 'timed out after 500 ms' });
      expect(row!.tries[0]!.durationMs).toBeLessThan(1500);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => trickle.close(() => r()));
    }
  });

  it('a 100 MB answer body is read only to a few KiB, then the socket is dropped', async () => {
    const gw = await gateway();
    const t = await gw.tenant('acme');
    const TOTAL = 100 * 1024 * 1024;
    let written = 0;
    let closed!: () => void;
    const done = new Promise<void>((r) => (closed = r));
    rx.handler = (_req, res) => {
      res.writeHead(500, { 'content-length': String(TOTAL) });
      const chunk = Buffer.alloc(64 * 1024, 'x');
      const pump = () => {
        while (written < TOTAL) {
          written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      res.on('close', () => closed());
      pump();
    };
    const reads: number[] = [];
    gw.s.callbacks.deliverer.on('callback:tried', (e) => reads.push(e.bytesRead));
    const jobId = await endJob(gw, t, rx.url());
    const started = Date.now();
    await gw.s.callbacks.deliverer.runOnce();
    await done;
    const [row] = await deliveriesOf(gw, t, jobId);
    expect(row).toMatchObject({ state: 'pending', lastStatus: 500 });
    expect(row!.lastError).toBe(`the receiver answered 500: ${'x'.repeat(200)}`);
    // The gateway read one socket chunk at most past its 4 KiB limit …
    expect(reads).toHaveLength(1);
    expect(reads[0]).toBeGreaterThanOrEqual(4096);
    expect(reads[0]).toBeLessThanOrEqual(4096 + 64 * 1024);
    // … and the receiver could not push more than socket buffers hold before the connection dropped.
    expect(written).toBeLessThan(32 * 1024 * 1024);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('runs at most `concurrency` tries at once; the rest wait their turn', async () => {
    const gw = await gateway({ concurrency: 3, perTenant: 3 });
    const t = await gw.tenant('acme');
    const held: ServerResponse[] = [];
    let open = 0;
    let most = 0;
    rx.handler = (_req, res) => {
      most = Math.max(most, ++open);
      held.push(res);
      res.on('close', () => open--);
    };
    for (let i = 0; i < 7; i++) await endJob(gw, t, rx.url());
    const d = gw.s.callbacks.deliverer;
    const first = d.runOnce();
    await expect.poll(() => held.length).toBe(3);
    expect(await d.runOnce()).toBe(0); // no room while three are under way
    for (const r of held.splice(0)) r.end();
    expect(await first).toBe(3);
    const second = d.runOnce();
    await expect.poll(() => held.length).toBe(3);
    for (const r of held.splice(0)) r.end();
    await second;
    const third = d.runOnce();
    await expect.poll(() => held.length).toBe(1);
    held.splice(0).forEach((r) => r.end());
    expect(await third).toBe(1);
    expect(most).toBe(3);
    expect(rx.hits).toHaveLength(7);
  });

  it("one tenant's hanging receivers hold at most its share of the slots; another tenant's callback goes out beside them", async () => {
    const gw = await gateway({ concurrency: 4, perTenant: 2, timeoutMs: 5000 });
    const a = await gw.tenant('hog');
    const b = await gw.tenant('polite');
    const held: ServerResponse[] = [];
    rx.handler = (req, res) => (req.url === '/hang' ? held.push(res) : res.end());
    for (let i = 0; i < 5; i++) await endJob(gw, a, rx.url('/hang'));
    const politeJob = await endJob(gw, b, rx.url('/fine'));
    const run = gw.s.callbacks.deliverer.runOnce();
    // The polite tenant's delivery completes while the hog's two tries still hang.
    await expect.poll(async () => (await deliveriesOf(gw, b, politeJob))[0]!.state).toBe('delivered');
    expect(held).toHaveLength(2);
    expect(rx.hits.filter((h) => h.url === '/hang')).toHaveLength(2);
    for (const r of held) r.end();
    expect(await run).toBe(3);
  });

  it("a tenant's backlog longer than the window the deliverer reads does not hide another tenant's delivery", async () => {
    const gw = await gateway({ concurrency: 4, perTenant: 2, timeoutMs: 5000 });
    const a = await gw.tenant('hog');
    const b = await gw.tenant('polite');
    const held: ServerResponse[] = [];
    rx.handler = (req, res) => (req.url === '/hang' ? held.push(res) : res.end());
    // More due rows than the 4 × 16 the deliverer reads at a time, all older than the polite one.
    for (let i = 0; i < 80; i++) await endJob(gw, a, rx.url('/hang'));
    const politeJob = await endJob(gw, b, rx.url('/fine'));
    const run = gw.s.callbacks.deliverer.runOnce();
    await expect.poll(async () => (await deliveriesOf(gw, b, politeJob))[0]!.state).toBe('delivered');
    expect(held).toHaveLength(2);
    for (const r of held) r.end();
    await run;
  });
});

describe('the callback secret', () => {
  it('is created on first use, stays the same, and needs jobs:write', async () => {
    const gw = await gateway();
    const t = await gw.tenant('acme');
    const s1 = await secretOf(gw, t);
    expect(await secretOf(gw, t)).toBe(s1);
    const other = await gw.tenant('other');
    expect(await secretOf(gw, other)).not.toBe(s1);
    const readOnly = await gw.token({ tenant: 'acme', scopes: ['jobs:read'] });
    expect((await gw.req('GET', '/v1/callback-secret', { token: readOnly })).status).toBe(403);
    expect((await gw.req('POST', '/v1/callback-secret/rotate', { token: readOnly })).status).toBe(403);
    expect((await gw.req('GET', '/v1/callback-secret')).status).toBe(401);
    // Sealed at rest: the database row does not hold the secret.
    const row = gw.s.store.sqlite.prepare('SELECT callback_secret_enc AS enc FROM tenant_secrets WHERE tenant = ?').get('acme') as { enc: string };
    expect(row.enc).not.toContain(s1.slice(6, 20));
  });

  it('after a rotation both secrets sign for 24 h, each signature verifying with its own; then only the new one', async () => {
    const gw = await gateway();
    const t = await gw.tenant('acme');
    const old = await secretOf(gw, t);
    const res = await gw.req('POST', '/v1/callback-secret/rotate', { token: t });
    expect(res.status).toBe(200);
    const fresh = (await res.json()).secret as string;
    expect(fresh).not.toBe(old);
    expect(await secretOf(gw, t)).toBe(fresh);
    const rotatedAt = now;

    await endJob(gw, t, rx.url());
    now = rotatedAt + 24 * 3_600_000 - 1000;
    await endJob(gw, t, rx.url());
    await gw.s.callbacks.deliverer.runOnce();
    expect(rx.hits).toHaveLength(2);
    for (const hit of rx.hits) {
      const [a, b] = signaturesOf(hit);
      const id = String(hit.headers['webhook-id']);
      const ts = String(hit.headers['webhook-timestamp']);
      expect(signaturesOf(hit)).toHaveLength(2);
      expect(a).toBe(expectedSignature(fresh, id, ts, hit.body));
      expect(b).toBe(expectedSignature(old, id, ts, hit.body));
    }

    now = rotatedAt + 24 * 3_600_000 + 1;
    await endJob(gw, t, rx.url());
    await gw.s.callbacks.deliverer.runOnce();
    const last = rx.hits[2]!;
    expect(signaturesOf(last)).toHaveLength(1);
    expect(verifies(last, fresh)).toBe(true);
    expect(verifies(last, old)).toBe(false);
  });
});

describe('GET /v1/jobs/:id/deliveries', () => {
  it("is the tenant's own: another tenant's job is 404, a job by name works, jobs:read suffices", async () => {
    const gw = await gateway();
    const t = await gw.tenant('acme');
    const res = await gw.req('POST', '/v1/jobs', { token: t, body: { command: 'true', name: 'nightly', callbackUrl: rx.url() } });
    const id = (await res.json()).id as string;
    await gw.req('POST', `/v1/jobs/${id}/cancel`, { token: t });
    await gw.s.callbacks.deliverer.runOnce();
    const reader = await gw.token({ tenant: 'acme', scopes: ['jobs:read'] });
    const byName = await gw.req('GET', '/v1/jobs/nightly/deliveries', { token: reader });
    expect(byName.status).toBe(200);
    expect((await byName.json()).deliveries).toMatchObject([{ state: 'delivered', tries: [{ n: 1, status: 200 }] }]);
    const other = await gw.tenant('other');
    const cross = await gw.req('GET', `/v1/jobs/${id}/deliveries`, { token: other });
    expect(cross.status).toBe(404);
    expect(cross.headers.get('content-type')).toContain('application/problem+json');
    expect((await gw.req('GET', '/v1/jobs/job_01ARZ3NDEKTSV4RRFFQ69G5FAV/deliveries', { token: t })).status).toBe(404);
    expect((await gw.req('GET', `/v1/jobs/${id}/deliveries`)).status).toBe(401);
  });

  it('every new route is in the OpenAPI document', async () => {
    const gw = await gateway();
    const doc = await (await gw.req('GET', '/openapi.json')).json();
    expect(doc.paths['/v1/callback-secret'].get).toBeDefined();
    expect(doc.paths['/v1/callback-secret/rotate'].post).toBeDefined();
    expect(doc.paths['/v1/jobs/{id}/deliveries'].get).toBeDefined();
  });
});

describe('durability', () => {
  it("no delivery is tried before the job's end is on disk (fsync of the WAL held open)", async () => {
    const gw = await gateway();
    const t = await gw.tenant('acme');
    const syncs: Array<{ path: string; done: (err: NodeJS.ErrnoException | null) => void }> = [];
    const held = new GroupCommit(gw.s.store.sqlite, { file: join(gw.dir, 'corral.db'), fdatasync: (fd, done) => syncs.push({ path: readlinkSync(`/proc/self/fd/${fd}`), done }) });
    const d = newDeliverer({ ...gw.s, ...gw.s.callbacks, store: { ...gw.s.store, durable: held.durable }, allowPrivate: true }, { clock });
    await endJob(gw, t, rx.url());
    let settled = false;
    const run = d.runOnce().then(() => (settled = true));
    await expect.poll(() => syncs.length).toBe(1);
    expect(syncs[0]!.path).toBe(join(gw.dir, 'corral.db-wal'));
    // The receiver is idle and the try waits while the fsync has not returned.
    await new Promise((r) => setTimeout(r, 200));
    expect(rx.hits).toHaveLength(0);
    expect(settled).toBe(false);
    syncs[0]!.done(null);
    await run;
    expect(rx.hits).toHaveLength(1);
    held.wal.close();
  });

  it('a delivery pending across a gateway restart is delivered once by the next gateway', async () => {
    // A port with nobody on it yet: the receiver comes up there after the restart.
    const down = new Receiver();
    await down.listen();
    const port = down.port;
    await down.close();

    const dir = mkdtempSync(join(tmpdir(), 'corral-cb-restart-'));
    const config = loadGatewayConfig({}, { CORRAL_DATA: dir, CORRAL_PORT: '0', CORRAL_JWT_SECRET: SECRET, CORRAL_LOG_LEVEL: 'silent', CORRAL_CALLBACK_PRIVATE: 'true' });
    const tuning: CallbackTuning = { pollMs: 50, random: () => 0.999999, schedule: { baseMs: 300, floorMs: 100 } };
    const start = () => startGateway(config, { log: pino({ level: 'silent' }), callbacks: tuning });
    let gw: Gateway | undefined = await start();
    const up = new Receiver();
    try {
      const admin = await mintToken({ secret: gw.services.secret, issuer: 'corral', audience: 'corral', sub: 'admin', scopes: ['admin'], ttlSeconds: 600 });
      const token = await mintToken({ secret: gw.services.secret, issuer: 'corral', audience: 'corral', sub: 'u', tenant: 'acme', scopes: ['jobs:read', 'jobs:write'], ttlSeconds: 600 });
      const call = async (g2: Gateway, method: string, path: string, tok: string, body?: unknown) => {
        const res = await fetch(g2.url + path, { method, headers: { authorization: `Bearer ${tok}`, ...(body !== undefined && { 'content-type': 'application/json' }) }, ...(body !== undefined && { body: JSON.stringify(body) }) });
        return { status: res.status, body: await res.json().catch(() => null) };
      };
      expect((await call(gw, 'POST', '/v1/tenants', admin, { id: 'acme' })).status).toBe(201);
      const secret = (await call(gw, 'GET', '/v1/callback-secret', token)).body.secret as string;
      const job = (await call(gw, 'POST', '/v1/jobs', token, { command: 'true', callbackUrl: `http://127.0.0.1:${port}/after` })).body;
      expect((await call(gw, 'POST', `/v1/jobs/${job.id}/cancel`, token)).status).toBe(202);
      // The loop, woken by the end, tries at once and finds nobody listening.
      await expect.poll(async () => (await call(gw!, 'GET', `/v1/jobs/${job.id}/deliveries`, token)).body.deliveries[0].tries.length).toBeGreaterThanOrEqual(1);
      const before = (await call(gw, 'GET', `/v1/jobs/${job.id}/deliveries`, token)).body.deliveries[0];
      expect(before.state).toBe('pending');
      expect(before.tries[0]).toMatchObject({ status: null, error: expect.stringContaining('ECONNREFUSED') });
      await gw.close();
      gw = undefined;

      gw = await start();
      await up.listen(port);
      await expect.poll(async () => (await call(gw!, 'GET', `/v1/jobs/${job.id}/deliveries`, token)).body.deliveries[0].state, { timeout: 10_000 }).toBe('delivered');
      // Given time for a duplicate, none comes.
      await new Promise((r) => setTimeout(r, 500));
      expect(up.hits).toHaveLength(1);
      expect(up.hits[0]!.url).toBe('/after');
      expect(up.hits[0]!.headers['webhook-id']).toBe(before.id);
      expect(verifies(up.hits[0]!, secret)).toBe(true);
      expect(JSON.parse(up.hits[0]!.body).data).toMatchObject({ id: job.id, state: 'cancelled' });
    } finally {
      await gw?.close();
      await up.close().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a try cut short by the gateway stopping is not counted and is due at once on the next start', async () => {
    const gw = await gateway();
    const t = await gw.tenant('acme');
    rx.handler = () => {};
    const jobId = await endJob(gw, t, rx.url());
    const d = gw.s.callbacks.deliverer;
    d.start();
    await expect.poll(() => rx.hits.length).toBe(1);
    await d.stop();
    const [row] = await deliveriesOf(gw, t, jobId);
    expect(row).toMatchObject({ state: 'pending', tries: [] });
    expect(Date.parse(row!.nextAt!)).toBeLessThanOrEqual(now);
  });
});
