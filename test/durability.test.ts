import { readlinkSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { afterEach, describe, expect, it } from 'vitest';
import { GroupCommit } from '../src/db/group-commit.js';
import { createApp } from '../src/http/app.js';
import { testGateway, type TestGateway } from './fixtures.js';

type Held = Array<{ path: string; done: (err: NodeJS.ErrnoException | null) => void }>;

/**
 * The gateway's HTTP API on a loopback port, with every barrier its answers wait on going through
 * a GroupCommit whose fdatasync of the WAL is held until the test lets it finish.
 */
async function heldDiskGateway(): Promise<{ g: TestGateway; base: string; syncs: Held; close: () => Promise<void> }> {
  const g = await testGateway();
  const syncs: Held = [];
  const held = new GroupCommit(g.s.store.sqlite, { file: join(g.dir, 'corral.db'), fdatasync: (fd, done) => syncs.push({ path: readlinkSync(`/proc/self/fd/${fd}`), done }) });
  const app = createApp({ ...g.s, store: { ...g.s.store, durable: held.durable } });
  const server = await new Promise<ServerType>((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
  });
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    g,
    base,
    syncs,
    close: async () => {
      await new Promise((r) => server.close(r));
      held.wal.close();
      await g.close();
    },
  };
}

/** Whether `p` settles within `ms` (the answer is held, or it has left). */
const within = (p: Promise<unknown>, ms = 150) => Promise.race([p.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);

let cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup) await c();
  cleanup = [];
});

describe('answers that report a final state wait for the disk', () => {
  it('GET of a job, a listing, a cancel, a ?wait replay and a sync invoke replay leave only after an fdatasync of the WAL that began after the end was read', async () => {
    const { g, base, syncs, close } = await heldDiskGateway();
    cleanup.push(close);
    await g.tenant('acme');
    const token = await g.token({ tenant: 'acme', scopes: ['jobs:read', 'jobs:write', 'functions:read', 'functions:write'] });
    const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
      fetch(base + path, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }), ...headers },
        ...(body !== undefined && { body: JSON.stringify(body) }),
      });
    const submitted = await call('POST', '/v1/jobs', { command: 'true' }, { 'idempotency-key': 'k1' });
    expect(submitted.status).toBe(202);
    const id = ((await submitted.json()) as { id: string }).id;
    expect((await call('PUT', '/v1/functions/echo', { command: 'cat' })).status).toBe(201);
    const invoked = await call('POST', '/v1/functions/echo/invoke', undefined, { 'idempotency-key': 'k2' });
    expect(invoked.status).toBe(202);
    const fnJob = invoked.headers.get('corral-job-id')!;
    // Both jobs end as a lease reaper or the scheduler ends one: committed, not fsynced on its own.
    for (const j of [id, fnJob]) {
      const c = g.s.machine.claim(j, 'agent-1')!;
      g.s.machine.finish(j, c.fence, { exitCode: 0, signal: null, reason: 'exit' });
    }
    expect(syncs).toHaveLength(0);

    const answers = [
      call('GET', `/v1/jobs/${id}`),
      call('GET', '/v1/jobs?state=succeeded'),
      call('POST', `/v1/jobs/${id}/cancel`),
      call('POST', '/v1/jobs?wait=5', { command: 'true' }, { 'idempotency-key': 'k1' }),
      call('POST', '/v1/functions/echo/invoke?wait=5', undefined, { 'idempotency-key': 'k2' }),
    ];
    for (const a of answers) expect(await within(a)).toBe(false);
    expect(syncs.length).toBeGreaterThanOrEqual(1);
    expect(syncs[0]!.path).toBe(join(g.dir, 'corral.db-wal'));
    for (const s of syncs) s.done(null);
    const [get, list, cancel, replay, invoke] = await Promise.all(answers);
    expect(get!.status).toBe(200);
    expect(((await get!.json()) as { state: string }).state).toBe('succeeded');
    expect(((await list!.json()) as { jobs: Array<{ id: string }> }).jobs.map((j) => j.id)).toEqual([fnJob, id]);
    expect(((await cancel!.json()) as { state: string }).state).toBe('succeeded');
    expect(replay!.status).toBe(200);
    expect(invoke!.status).toBe(200);
    expect(invoke!.headers.get('corral-state')).toBe('succeeded');
  });

  it('an answer about an end already on disk costs no fsync', async () => {
    const { g, base, syncs, close } = await heldDiskGateway();
    cleanup.push(close);
    const token = await g.tenant('acme');
    const r = await fetch(`${base}/v1/jobs`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{"command":"true"}' });
    const id = ((await r.json()) as { id: string }).id;
    const c = g.s.machine.claim(id, 'agent-1')!;
    g.s.machine.finish(id, c.fence, { exitCode: 0, signal: null, reason: 'exit' });
    const first = fetch(`${base}/v1/jobs/${id}`, { headers: { authorization: `Bearer ${token}` } });
    await expect.poll(() => syncs.length).toBe(1);
    syncs[0]!.done(null);
    expect((await first).status).toBe(200);
    // Nothing was written since that fsync began: the next reads leave at once.
    for (let i = 0; i < 3; i++) {
      const again = await fetch(`${base}/v1/jobs/${id}`, { headers: { authorization: `Bearer ${token}` } });
      expect(again.status).toBe(200);
    }
    expect(syncs).toHaveLength(1);
  });
});
