import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createApp } from '../src/http/app.js';
import { prefixBound } from '../src/jobs/service.js';
import { problemOf, testGateway, type TestGateway } from './fixtures.js';
import { startCluster, type Cluster } from './helpers/cluster.js';

let g: TestGateway;
let acme: string;

beforeEach(async () => {
  g = await testGateway();
  acme = await g.tenant('acme');
});
afterEach(() => g.close());

const submit = (body: unknown, token = acme, headers: Record<string, string> = {}) => g.req('POST', '/v1/jobs', { token, body, headers });

describe('POST /v1/jobs', () => {
  it('queues a job with every field and answers 202 with it', async () => {
    const res = await submit({
      command: 'echo hello world',
      image: 'busybox',
      timeout: 5,
      retries: 2,
      cpu: 0.5,
      memory: '64M',
      env: { GREETING: 'hi' },
      stdin: 'input',
      name: 'first',
      fresh: true,
      callbackUrl: 'https://example.org/hook',
    });
    expect(res.status).toBe(202);
    const job = await res.json();
    expect(job).toMatchObject({
      id: expect.stringMatching(/^job_[0-9A-Z]{26}$/),
      name: 'first',
      tenant: 'acme',
      state: 'queued',
      command: 'echo hello world',
      timeout: 5,
      retries: 2,
      cpu: 0.5,
      memory: 64 * 1024 * 1024,
      env: { GREETING: 'hi' },
      fresh: true,
      attempts: [],
      outputBytes: 0,
      outputTruncated: false,
    });
    // stdin is kept apart from the spec (it may be megabytes) and is not echoed in job views.
    expect(job).not.toHaveProperty('stdin');
  });

  it('accepts an argv array and a shell line with spaces without extra quoting', async () => {
    const a = await (await submit({ command: ['/bin/echo', 'a b', '$HOME'] })).json();
    expect(a.command).toEqual(['/bin/echo', 'a b', '$HOME']);
    const b = await (await submit({ command: 'sleep 1 && echo "done here"' })).json();
    expect(b.command).toBe('sleep 1 && echo "done here"');
  });

  it('fills limits from the quota so every job is bounded', async () => {
    const job = await (await submit({ command: 'true' })).json();
    expect(job.memory).toBe(256 * 1024 * 1024);
    expect(job.cpu).toBe(2);
    expect(job.image).toBe('busybox');
  });

  it('gives Unicode names such as 任务-一 and finds the job by them', async () => {
    const job = await (await submit({ command: 'true', name: '任务-一' })).json();
    const res = await g.req('GET', `/v1/jobs/${encodeURIComponent('任务-一')}`, { token: acme });
    expect(res.status).toBe(200);
    expect((await res.json()).id).toBe(job.id);
  });

  it('refuses a second job with the same name in the tenant (409), but another tenant may use it', async () => {
    await submit({ command: 'true', name: 'dup' });
    const res = await submit({ command: 'true', name: 'dup' });
    expect(res.status).toBe(409);
    expect((await problemOf(res)).fields).toEqual(['name']);
    const other = await g.tenant('other');
    expect((await submit({ command: 'true', name: 'dup' }, other)).status).toBe(202);
  });

  it('refuses an image the gateway has never heard of with 422 naming image', async () => {
    const res = await submit({ command: 'true', image: 'nosuchimage' });
    expect(res.status).toBe(422);
    expect((await problemOf(res)).fields).toEqual(['image']);
  });

  it('with ?wait answers 202 with the job still queued when no agent takes it', async () => {
    const started = Date.now();
    const res = await g.req('POST', '/v1/jobs?wait=0.2', { token: acme, body: { command: 'true' } });
    expect(res.status).toBe(202);
    expect((await res.json()).state).toBe('queued');
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
  });

  it('with ?wait answers 200 with the finished job as soon as it ends', async () => {
    const pending = g.req('POST', '/v1/jobs?wait=10', { token: acme, body: { command: 'true' } });
    // Play the agent: claim the job and finish it.
    await new Promise((r) => setTimeout(r, 20));
    const id = g.s.store.sqlite.prepare(`SELECT id FROM jobs`).pluck().get() as string;
    const c = g.s.machine.claim(id, 'agent-1')!;
    g.s.machine.finish(id, c.fence, { exitCode: 0, signal: null, reason: 'exit' });
    const res = await pending;
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ id, state: 'succeeded', exitCode: 0 });
  });

  it('with ?wait answers at once when the job ended before its submitter began to wait', async () => {
    // Play an agent that takes and ends the job the moment it is committed, before its fsync.
    g.s.machine.once('job:queued', ({ jobId }) => {
      const c = g.s.machine.claim(jobId, 'agent-1')!;
      g.s.machine.finish(jobId, c.fence, { exitCode: 0, signal: null, reason: 'exit' });
    });
    const t0 = Date.now();
    const res = await g.req('POST', '/v1/jobs?wait=5', { token: acme, body: { command: 'true' } });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ state: 'succeeded' });
    expect(Date.now() - t0).toBeLessThan(4000); // not held until the wait ran out
  });
});

describe('Idempotency-Key', () => {
  it('the same key and body give the same job', async () => {
    const a = await (await submit({ command: 'true' }, acme, { 'idempotency-key': 'k1' })).json();
    const b = await (await submit({ command: 'true' }, acme, { 'idempotency-key': 'k1' })).json();
    expect(b.id).toBe(a.id);
    expect(g.s.store.sqlite.prepare('SELECT count(*) FROM jobs').pluck().get()).toBe(1);
  });

  it('the same key with a different body is 422', async () => {
    await submit({ command: 'true' }, acme, { 'idempotency-key': 'k1' });
    const res = await submit({ command: 'false' }, acme, { 'idempotency-key': 'k1' });
    expect(res.status).toBe(422);
    expect((await problemOf(res)).fields).toEqual(['Idempotency-Key']);
  });

  it('a second request while the first is in flight (holding with ?wait) is 409', async () => {
    const first = g.req('POST', '/v1/jobs?wait=0.5', { token: acme, body: { command: 'true' }, headers: { 'idempotency-key': 'k2' } });
    await new Promise((r) => setTimeout(r, 100));
    const second = await submit({ command: 'true' }, acme, { 'idempotency-key': 'k2' });
    expect(second.status).toBe(409);
    expect((await problemOf(second)).fields).toEqual(['Idempotency-Key']);
    expect((await first).status).toBe(202);
    const third = await submit({ command: 'true' }, acme, { 'idempotency-key': 'k2' });
    expect(third.status).toBe(202);
  });

  it('keys are scoped per tenant', async () => {
    const other = await g.tenant('other');
    const a = await (await submit({ command: 'true' }, acme, { 'idempotency-key': 'same' })).json();
    const b = await (await submit({ command: 'true' }, other, { 'idempotency-key': 'same' })).json();
    expect(b.id).not.toBe(a.id);
    expect(b.tenant).toBe('other');
  });
});

describe('GET /v1/jobs', () => {
  it('lists newest first with cursor pagination and filters', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await (await submit({ command: 'true', name: `j${i}` })).json()).id);
    const p1 = await (await g.req('GET', '/v1/jobs?limit=2', { token: acme })).json();
    expect(p1.jobs.map((j: { id: string }) => j.id)).toEqual([ids[4], ids[3]]);
    const p2 = await (await g.req('GET', `/v1/jobs?limit=2&cursor=${p1.nextCursor}`, { token: acme })).json();
    expect(p2.jobs.map((j: { id: string }) => j.id)).toEqual([ids[2], ids[1]]);
    const p3 = await (await g.req('GET', `/v1/jobs?limit=2&cursor=${p2.nextCursor}`, { token: acme })).json();
    expect(p3.jobs.map((j: { id: string }) => j.id)).toEqual([ids[0]]);
    expect(p3.nextCursor).toBeNull();
    g.s.machine.cancel(ids[1]!);
    const cancelled = await (await g.req('GET', '/v1/jobs?state=cancelled', { token: acme })).json();
    expect(cancelled.jobs.map((j: { id: string }) => j.id)).toEqual([ids[1]]);
    const named = await (await g.req('GET', '/v1/jobs?name=j3', { token: acme })).json();
    expect(named.jobs.map((j: { id: string }) => j.id)).toEqual([ids[3]]);
  });

  it('filters by the function a job was invoked from', async () => {
    const fns = await g.token({ tenant: 'acme', scopes: ['jobs:read', 'jobs:write', 'functions:read', 'functions:write'] });
    expect((await g.req('PUT', '/v1/functions/echo', { token: fns, body: { command: 'cat' } })).status).toBeLessThan(300);
    const invoked = await (await g.req('POST', '/v1/functions/echo/invoke', { token: fns })).json();
    await submit({ command: 'true' });
    const list = await (await g.req('GET', '/v1/jobs?function=echo', { token: acme })).json();
    expect(list.jobs.map((j: { id: string }) => j.id)).toEqual([invoked.id]);
    const none = await (await g.req('GET', '/v1/jobs?function=other', { token: acme })).json();
    expect(none.jobs).toEqual([]);
  });

  it('never lists another tenant’s jobs', async () => {
    const other = await g.tenant('other');
    await submit({ command: 'true' }, other);
    const list = await (await g.req('GET', '/v1/jobs', { token: acme })).json();
    expect(list.jobs).toEqual([]);
  });

  it('searches by name prefix on the name index, in name order: exact characters (no wildcards), any Unicode, with paging and the other filters', async () => {
    const names = ['ab%c', 'abc', 'ab_x', 'ab', 'отчёт-1', 'отчёт-2', 'отчёя', '😀a', '😀b', '😁', 'z\u{10FFFF}', 'z\u{10FFFF}y', '{'];
    const ids = new Map<string, string>();
    for (const name of names) ids.set(name, (await (await submit({ command: 'true', name })).json()).id);
    const search = async (query: string) => {
      const res = await g.req('GET', `/v1/jobs?${query}`, { token: acme });
      expect(res.status, query).toBe(200);
      return (await res.json()) as { jobs: Array<{ name: string }>; nextCursor: string | null };
    };
    const found = async (prefix: string) => (await search(`namePrefix=${encodeURIComponent(prefix)}`)).jobs.map((j) => j.name);
    // `%` and `_` are the name's own characters, not LIKE wildcards.
    expect(await found('ab%')).toEqual(['ab%c']);
    expect(await found('ab_')).toEqual(['ab_x']);
    expect(await found('ab')).toEqual(['ab', 'ab%c', 'ab_x', 'abc']);
    expect(await found('отчёт-')).toEqual(['отчёт-1', 'отчёт-2']);
    expect(await found('отчё')).toEqual(['отчёт-1', 'отчёт-2', 'отчёя']);
    expect(await found('😀')).toEqual(['😀a', '😀b']);
    // The highest code point has nothing above it: the range still ends before the next prefix.
    expect(await found('z\u{10FFFF}')).toEqual(['z\u{10FFFF}', 'z\u{10FFFF}y']);
    expect(await found('AB')).toEqual([]);

    // Paging through a prefix in name order, one job a page.
    const seen: string[] = [];
    let cursor: string | null = '';
    while (cursor !== null) {
      const page = await search(`namePrefix=${encodeURIComponent('отч')}&limit=1${cursor ? `&cursor=${cursor}` : ''}`);
      seen.push(...page.jobs.map((j) => j.name));
      cursor = page.nextCursor;
    }
    expect(seen).toEqual(['отчёт-1', 'отчёт-2', 'отчёя']);
    // A page cannot continue after a job deleted since: it says so rather than end the listing early.
    const first = await search(`namePrefix=${encodeURIComponent('отч')}&limit=1`);
    expect((await g.req('DELETE', `/v1/jobs/${ids.get('отчёт-1')}`, { token: acme })).status).toBe(204);
    const gone = await g.req('GET', `/v1/jobs?namePrefix=${encodeURIComponent('отч')}&limit=1&cursor=${first.nextCursor}`, { token: acme });
    expect(gone.status).toBe(422);
    expect((await problemOf(gone)).fields).toEqual(['cursor']);
    const elsewhere = await g.req('GET', `/v1/jobs?namePrefix=${encodeURIComponent('отч')}&cursor=${ids.get('abc')}`, { token: acme });
    expect(elsewhere.status).toBe(422);

    g.s.machine.cancel(ids.get('отчёт-2')!);
    expect((await search(`namePrefix=${encodeURIComponent('отчёт')}&state=cancelled`)).jobs.map((j) => j.name)).toEqual(['отчёт-2']);
    const other = await g.tenant('other');
    await submit({ command: 'true', name: 'abz' }, other);
    expect(await found('ab')).not.toContain('abz');
    expect((await g.req('GET', '/v1/jobs?namePrefix=', { token: acme })).status).toBe(400);
  });

  it('bounds a prefix range by the next code point, skipping surrogates and carrying past U+10FFFF', () => {
    expect(prefixBound('ab')).toBe('ac');
    expect(prefixBound('\u{D7FF}')).toBe('\u{E000}');
    expect(prefixBound('😀')).toBe('😁');
    expect(prefixBound('a\u{10FFFF}\u{10FFFF}')).toBe('b');
    expect(prefixBound('\u{10FFFF}')).toBeUndefined();
  });
});

describe('POST /v1/jobs/:id/rerun', () => {
  const stdinOf = (id: string) => g.s.store.sqlite.prepare('SELECT stdin FROM jobs WHERE id = ?').pluck().get(id) as Buffer | null;

  it('queues the same request again as a new job, with its stdin and without its name', async () => {
    const body = { command: ['/bin/sh', '-c', 'cat'], timeout: 7, retries: 1, memory: '64M', env: { A: 'b' }, stdin: 'héllo stdin\n', name: 'orig', fresh: true };
    const first = await (await submit(body)).json();
    expect(first.stdinBytes).toBe(Buffer.byteLength(body.stdin));
    const res = await g.req('POST', '/v1/jobs/orig/rerun', { token: acme });
    expect(res.status).toBe(202);
    const again = await res.json();
    expect(again.id).not.toBe(first.id);
    expect(again).toMatchObject({ name: null, state: 'queued', command: body.command, timeout: 7, retries: 1, memory: 64 * 1024 ** 2, env: { A: 'b' }, fresh: true, stdinBytes: first.stdinBytes });
    expect(stdinOf(again.id)!.toString()).toBe(body.stdin);
    expect((await (await g.req('GET', `/v1/jobs/${again.id}`, { token: acme })).json()).stdinBytes).toBe(first.stdinBytes);

    const named = await g.req('POST', `/v1/jobs/${first.id}/rerun`, { token: acme, body: { name: 'second try' } });
    expect(named.status).toBe(202);
    expect((await named.json()).name).toBe('second try');
    const dup = await g.req('POST', `/v1/jobs/${first.id}/rerun`, { token: acme, body: { name: 'second try' } });
    expect(dup.status).toBe(409);
    expect((await problemOf(dup)).fields).toEqual(['name']);
    const bad = await g.req('POST', `/v1/jobs/${first.id}/rerun`, { token: acme, body: { command: 'rm -rf /' } });
    expect(bad.status).toBe(400);
  });

  it('is a new submit to the quotas: rate, queue depth and per-job limits as they are now; Idempotency-Key gives the same job back', async () => {
    const t = await g.tenant('metered', { ratePerMinute: 2 });
    const job = await (await submit({ command: 'true', memory: '128M' }, t)).json();
    const key = { 'idempotency-key': 'rerun-1' };
    const a = await g.req('POST', `/v1/jobs/${job.id}/rerun`, { token: t, headers: key });
    const b = await g.req('POST', `/v1/jobs/${job.id}/rerun`, { token: t, headers: key });
    expect([a.status, b.status]).toEqual([202, 202]);
    expect((await b.json()).id).toBe((await a.json()).id);
    const limited = await g.req('POST', `/v1/jobs/${job.id}/rerun`, { token: t });
    expect(limited.status).toBe(429);
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);

    const shrunk = await g.tenant('shrunk');
    const big = await (await submit({ command: 'true', memory: '128M' }, shrunk)).json();
    expect((await g.req('PATCH', '/v1/tenants/shrunk', { token: g.admin, body: { quota: { maxMemoryBytes: 64 * 1024 ** 2 } } })).status).toBe(200);
    const over = await g.req('POST', `/v1/jobs/${big.id}/rerun`, { token: shrunk });
    expect(over.status).toBe(422);
    expect((await problemOf(over)).fields).toEqual(['memory']);
  });

  it('is refused with 503 while the gateway shuts down, like a submit', async () => {
    const job = await (await submit({ command: 'true' })).json();
    const draining = createApp(g.s, { draining: () => true });
    const res = await draining.request(`/v1/jobs/${job.id}/rerun`, { method: 'POST', headers: { authorization: `Bearer ${acme}` } });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBeTruthy();
    expect(g.s.store.sqlite.prepare('SELECT count(*) FROM jobs').pluck().get()).toBe(1);
  });

  it('answers 404 for another tenant’s job, by id and by name', async () => {
    const other = await g.tenant('other');
    const job = await (await submit({ command: 'true', name: 'theirs', stdin: 'secret' }, other)).json();
    for (const ref of [job.id, 'theirs']) {
      const res = await g.req('POST', `/v1/jobs/${ref}/rerun`, { token: acme });
      expect(res.status).toBe(404);
      expect((await problemOf(res)).body.detail).toBe(`job ${ref} not found`);
    }
    expect(g.s.store.sqlite.prepare('SELECT count(*) FROM jobs').pluck().get()).toBe(1);
    expect((await g.req('POST', `/v1/jobs/${job.id}/rerun`, { token: other })).status).toBe(202);
  });
});

describe('POST /v1/jobs/:id/rerun on a real agent', () => {
  let cluster: Cluster;
  beforeAll(async () => {
    cluster = await startCluster({ agents: ['jobsapi-rerun'] });
  });
  afterAll(async () => cluster?.stop());

  it('runs the job again with the same stdin: the re-run job’s output echoes it', async () => {
    const client = await cluster.tenant('rerun');
    const stdin = 'line one\nline twö ✓\n';
    const { job } = await client.submit({ command: 'cat; echo done', stdin }, 30);
    expect(job.state).toBe('succeeded');
    const res = await client.request('POST', `/v1/jobs/${job.id}/rerun?wait=30`);
    expect(res.status).toBe(200);
    const again = (await res.json()) as { id: string; state: string };
    expect(again.state).toBe('succeeded');
    expect(await client.output(again.id, 'stdout')).toBe(`${stdin}done\n`);
  });
});

describe('output, cancel and delete', () => {
  it('serves stored output per stream, capped at maxOutputBytes with truncation recorded', async () => {
    const t = await g.tenant('small', { maxOutputBytes: 10 });
    const job = await (await submit({ command: 'true' }, t)).json();
    const c = g.s.machine.claim(job.id, 'a1')!;
    g.s.output.append(job.id, c.fence, 'stdout', Buffer.from('hello '));
    g.s.output.append(job.id, c.fence, 'stderr', Buffer.from('oops'));
    g.s.output.append(job.id, c.fence, 'stdout', Buffer.from('world, this is too long'));
    g.s.machine.finish(job.id, c.fence, { exitCode: 0, signal: null, reason: 'exit' });
    const all = await g.req('GET', `/v1/jobs/${job.id}/output`, { token: t });
    expect(await all.text()).toBe('hello oops');
    const out = await g.req('GET', `/v1/jobs/${job.id}/output?stream=stdout`, { token: t });
    expect(await out.text()).toBe('hello ');
    const after = await (await g.req('GET', `/v1/jobs/${job.id}`, { token: t })).json();
    expect(after).toMatchObject({ outputBytes: 10, outputTruncated: true });
  });

  it('follows output live as server-sent events until the job ends', async () => {
    const job = await (await submit({ command: 'true' })).json();
    const c = g.s.machine.claim(job.id, 'a1')!;
    g.s.output.append(job.id, c.fence, 'stdout', Buffer.from('early\n'));
    const res = await g.req('GET', `/v1/jobs/${job.id}/output?follow=1`, { token: acme });
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    setTimeout(() => {
      g.s.output.append(job.id, c.fence, 'stdout', Buffer.from('late\n'));
      g.s.machine.finish(job.id, c.fence, { exitCode: 0, signal: null, reason: 'exit' });
    }, 30);
    const text = await res.text();
    expect(text).toMatch(/event: stdout\ndata: early/);
    expect(text).toMatch(/event: stdout\ndata: late/);
    expect(text).toMatch(/event: end\ndata: \{"state":"succeeded"/);
  });

  it('cancels a queued job', async () => {
    const job = await (await submit({ command: 'true' })).json();
    const res = await g.req('POST', `/v1/jobs/${job.id}/cancel`, { token: acme });
    expect(res.status).toBe(202);
    expect((await res.json()).state).toBe('cancelled');
  });

  it('deletes a job and its output; it is then 404', async () => {
    const job = await (await submit({ command: 'true', name: 'gone' })).json();
    expect((await g.req('DELETE', '/v1/jobs/gone', { token: acme })).status).toBe(204);
    expect((await g.req('GET', `/v1/jobs/${job.id}`, { token: acme })).status).toBe(404);
    expect(g.s.store.sqlite.prepare('SELECT count(*) FROM jobs').pluck().get()).toBe(0);
  });

  it('a token of tenant A gets 404 for B’s job on every route', async () => {
    const other = await g.tenant('other');
    const job = await (await submit({ command: 'true', name: 'secret' }, other)).json();
    for (const [m, p] of [
      ['GET', `/v1/jobs/${job.id}`],
      ['GET', '/v1/jobs/secret'],
      ['GET', `/v1/jobs/${job.id}/output`],
      ['POST', `/v1/jobs/${job.id}/cancel`],
      ['POST', `/v1/jobs/${job.id}/rerun`],
      ['DELETE', `/v1/jobs/${job.id}`],
    ] as const) {
      const res = await g.req(m, p, { token: acme });
      expect(res.status, `${m} ${p}`).toBe(404);
    }
    expect((await g.req('GET', `/v1/jobs/${job.id}`, { token: other })).status).toBe(200);
  });
});

describe('quotas', () => {
  it('refuses per-job maxima with 422 naming the limit', async () => {
    const t = await g.tenant('tight', { maxTimeoutSeconds: 10, maxMemoryBytes: 64 * 1024 * 1024, maxCpu: 1 });
    for (const [body, field] of [
      [{ command: 'true', timeout: 11 }, 'timeout'],
      [{ command: 'true', memory: '65M' }, 'memory'],
      [{ command: 'true', cpu: 1.5 }, 'cpu'],
      [{ command: 'true', cpuset: '0-1' }, 'cpuset'],
    ] as const) {
      const res = await submit(body, t);
      expect(res.status).toBe(422);
      const p = await problemOf(res);
      expect(p.fields).toEqual([field]);
      expect(p.body.detail).toMatch(/max(TimeoutSeconds|MemoryBytes|Cpu)/);
    }
  });

  it('answers 429 with Retry-After past ratePerMinute and maxQueued', async () => {
    const t = await g.tenant('slow', { ratePerMinute: 2 });
    expect((await submit({ command: 'true' }, t)).status).toBe(202);
    expect((await submit({ command: 'true' }, t)).status).toBe(202);
    const res = await submit({ command: 'true' }, t);
    expect(res.status).toBe(429);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    const q = await g.tenant('shallow', { maxQueued: 1 });
    await submit({ command: 'true' }, q);
    const full = await submit({ command: 'true' }, q);
    expect(full.status).toBe(429);
    expect((await problemOf(full)).fields).toEqual(['maxQueued']);
  });

  it('reports usage to the tenant', async () => {
    await submit({ command: 'true' });
    const u = await (await g.req('GET', '/v1/usage', { token: acme })).json();
    expect(u).toMatchObject({ tenant: 'acme', now: { queued: 1, running: 0 }, quota: { maxConcurrent: 10 } });
  });
});

describe('callbackUrl', () => {
  it('POSTs the finished job to the callback URL when it ends', async () => {
    const { createServer } = await import('node:http');
    const received: Array<{ headers: Record<string, unknown>; body: { type: string; data: { id: string; state: string } } }> = [];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        received.push({ headers: req.headers, body: JSON.parse(body) });
        res.end('ok');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as { port: number }).port;
    const open = await testGateway({ CORRAL_CALLBACK_PRIVATE: 'true' });
    try {
      const t = await open.tenant('cb');
      const job = await (await open.req('POST', '/v1/jobs', { token: t, body: { command: 'true', callbackUrl: `http://127.0.0.1:${port}/done` } })).json();
      const c = open.s.machine.claim(job.id, 'a1')!;
      open.s.machine.finish(job.id, c.fence, { exitCode: 0, signal: null, reason: 'exit' });
      await open.s.callbacks.deliverer.runOnce();
      expect(received).toHaveLength(1);
      expect(received[0]!.body).toMatchObject({ type: 'job.ended', data: { id: job.id, state: 'succeeded' } });
      const deliveries = (await (await open.req('GET', `/v1/jobs/${job.id}/deliveries`, { token: t })).json()).deliveries;
      expect(received[0]!.headers['webhook-id']).toBe(deliveries[0].id);
    } finally {
      await open.close();
      server.close();
    }
  });

  it('refuses to call loopback or private addresses by default', async () => {
    const job = await (await submit({ command: 'true', callbackUrl: 'http://127.0.0.1:9/x' })).json();
    const c = g.s.machine.claim(job.id, 'a1')!;
    g.s.machine.finish(job.id, c.fence, { exitCode: 0, signal: null, reason: 'exit' });
    await g.s.callbacks.deliverer.runOnce();
    const [d] = g.s.callbacks.outbox.ofJob(job.id);
    // Refused before any connection: no status, and no try after this one.
    expect(d).toMatchObject({ state: 'failed', lastStatus: null });
    expect(d!.lastError).toMatch(/^callback host 127\.0\.0\.1 is not a public address$/);
  });
});
