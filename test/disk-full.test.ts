import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, rmdirSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { testGateway } from './fixtures.js';
import { freePort, killed, runCli, startCli } from './helpers/process.js';

let cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

/** Writes to `file` until the filesystem has no byte left for it. */
function fill(file: string): void {
  const fd = openSync(file, 'w');
  try {
    for (const size of [1 << 20, 4096, 1]) {
      const chunk = Buffer.alloc(size, 1);
      for (;;) {
        try {
          writeSync(fd, chunk);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
          throw err;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
}

describe('a full data disk', () => {
  it('refuses submits with 507 naming the cause, keeps serving reads, writes no half job, and takes work again once space returns', { timeout: 120_000 }, async () => {
    const mnt = mkdtempSync(join(tmpdir(), 'corral-full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m,mode=0700', 'tmpfs', mnt]);
    cleanup.push(() => {
      execFileSync('umount', ['-l', mnt]);
      rmdirSync(mnt);
    });
    const data = join(mnt, 'data');
    const port = await freePort();
    const env = { CORRAL_DATA: data, CORRAL_PORT: String(port) };
    const { child, output } = await startCli(['gateway'], env, /gateway listening/);
    cleanup.push(() => killed(child, 'SIGKILL'));
    const base = `http://127.0.0.1:${port}`;
    const admin = readFileSync(join(data, 'admin.token'), 'utf8').trim();
    const created = await fetch(`${base}/v1/tenants`, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ id: 'acme', quota: { ratePerMinute: null } }) });
    expect(created.status).toBe(201);
    const token = (await runCli(['token', '--tenant', 'acme', '--scope', 'jobs:read jobs:write'], env)).stdout.trim();
    const auth = { authorization: `Bearer ${token}` };
    const submit = (name: string) =>
      fetch(`${base}/v1/jobs`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ command: `echo ${'x'.repeat(2000)}`, name }) });

    const first = await submit('before');
    expect(first.status).toBe(202);
    const firstId = ((await first.json()) as { id: string }).id;

    const filler = join(mnt, 'filler');
    fill(filler);
    const accepted = ['before'];
    let refused: Response | undefined;
    let refusedName = '';
    // The WAL may still have room for a few commits; the first that needs a new block is refused.
    for (let i = 0; i < 2000 && !refused; i++) {
      const r = await submit(`full-${i}`);
      if (r.status === 202) accepted.push(`full-${i}`);
      else {
        refused = r;
        refusedName = `full-${i}`;
      }
    }
    expect(refused?.status).toBe(507);
    expect(refused!.headers.get('content-type')).toBe('application/problem+json');
    expect(Number(refused!.headers.get('retry-after'))).toBeGreaterThan(0);
    const problem = (await refused!.json()) as { type: string; status: number; detail: string };
    expect(problem.type).toBe('/problems/insufficient_storage');
    expect(problem.status).toBe(507);
    expect(problem.detail).toMatch(/disk is full/);

    // Reads are served while the disk is full; the refused job was not written, not even in part.
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const one = await fetch(`${base}/v1/jobs/${firstId}`, { headers: auth });
    expect(one.status).toBe(200);
    expect((await fetch(`${base}/v1/jobs/${encodeURIComponent(refusedName)}`, { headers: auth })).status).toBe(404);
    const listed = (await (await fetch(`${base}/v1/jobs?limit=200`, { headers: auth })).json()) as { jobs: Array<{ name: string }> };
    expect(listed.jobs.map((j) => j.name).sort()).toEqual([...accepted].sort());

    // Space returns: the same gateway takes work again, without a restart.
    rmSync(filler);
    const again = await submit(refusedName);
    expect(again.status).toBe(202);
    expect(child.exitCode).toBe(null);
    expect(output()).not.toMatch(/unhandled|uncaught/i);
    await killed(child, 'SIGTERM');
    expect(child.exitCode).toBe(0);
  });
});

describe('leases across a full disk', () => {
  it('an attempt whose heartbeats could not be recorded while the disk was full is not run again: writes working again renew every lease', async () => {
    let now = Date.now();
    const g = await testGateway({ CORRAL_LEASE_MS: '5000' }, { clock: () => now });
    cleanup.push(() => g.close());
    g.s.scheduler.stop(); // the test reaps by hand, at the times it sets
    const token = await g.tenant('acme');
    const res = await g.req('POST', '/v1/jobs', { token, body: { command: 'true' } });
    const id = ((await res.json()) as { id: string }).id;
    now = Date.now() + 1; // the job's run_after is the wall clock's
    const claim = g.s.machine.claim(id, 'agent-1')!;
    // A write refused on a full disk, as the group commit gets it from SQLite: the agent's
    // heartbeats for the next 6 s, past the 5 s lease, are refused like it.
    const full = Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
    await expect(g.s.store.commit(() => { throw full; })).rejects.toThrow(/disk is full/);
    now += 6000;
    // Space is back: the first reap renews instead of re-running the attempt.
    expect(g.s.scheduler.reap()).toBe(0);
    expect(g.s.scheduler.reap()).toBe(0);
    expect(g.s.jobs.get('acme', id).state).toBe('running');
    // The agent's kept result, sent again, ends the attempt it belongs to.
    expect(g.s.machine.finish(id, claim.fence, { exitCode: 0, signal: null, reason: 'exit' }, 'agent-1')).toBe('succeeded');
    expect(g.s.jobs.get('acme', id).attempts).toHaveLength(1);

    // A lease that runs out afterwards with nothing heard is reaped as before.
    const other = ((await (await g.req('POST', '/v1/jobs', { token, body: { command: 'true' } })).json()) as { id: string }).id;
    now = Math.max(now, Date.now() + 1);
    expect(g.s.machine.claim(other, 'agent-1')).toBeDefined();
    now += 6000;
    expect(g.s.scheduler.reap()).toBe(1);
    expect(g.s.jobs.get('acme', other).state).toBe('queued');
  });
});
