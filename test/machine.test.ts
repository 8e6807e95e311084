import Database from 'better-sqlite3';
import { readlinkSync, rmSync } from 'node:fs';
import { describe, expect, it, beforeEach } from 'vitest';
import { GroupCommit } from '../src/db/group-commit.js';
import { openStore, type Store } from '../src/db/open.js';
import { JobMachine } from '../src/queue/machine.js';
import { MAX_PLATFORM_FAILURES } from '../src/queue/retry.js';
import { LeaseLost } from '../src/errors/domain.js';

let store: Store;
let now: number;
let machine: JobMachine;

function add(id: string, retries = 0) {
  machine.enqueue({ id, tenant: 't', name: null, image: 'busybox', spec: '{}', retries, createdAt: now });
}
const state = (id: string) => (store.sqlite.prepare('SELECT state FROM jobs WHERE id = ?').pluck().get(id) as string);
const row = (id: string) => store.sqlite.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as Record<string, number | string | null>;
const exit = (code: number) => ({ exitCode: code, signal: null, reason: 'exit' as const });
const ID = (n: number) => `job_${String(n).padStart(26, '0')}`;

beforeEach(() => {
  store = openStore(':memory:');
  now = 1_000_000;
  machine = new JobMachine(store.sqlite, { clock: () => now, leaseMs: 10_000, backoffBaseMs: 1000 });
});

describe('job state machine', () => {
  it('gives every running attempt a full lease at gateway start: time the gateway was down does not expire it', () => {
    add(ID(1));
    add(ID(2));
    machine.claim(ID(1), 'a1');
    now += 60_000; // the gateway was down for longer than the lease
    expect(machine.renewAll()).toBe(1);
    expect(machine.reapExpired()).toBe(0);
    expect(state(ID(1))).toBe('running');
    now += 10_001; // the agent did not come back within the new lease
    expect(machine.reapExpired()).toBe(1);
    expect(state(ID(2))).toBe('queued');
  });

  it('claims a queued job once, with a fence and attempt 1', () => {
    add(ID(1));
    const c = machine.claim(ID(1), 'a1');
    expect(c).toMatchObject({ jobId: ID(1), n: 1 });
    expect(c!.fence).toBeGreaterThan(1);
    expect(state(ID(1))).toBe('running');
    expect(machine.claim(ID(1), 'a2')).toBeUndefined();
  });

  it('a successful exit ends the job succeeded and records the attempt', () => {
    add(ID(1));
    const c = machine.claim(ID(1), 'a1')!;
    machine.start(ID(1), c.fence, 'ct-1');
    now += 500;
    expect(machine.finish(ID(1), c.fence, { ...exit(0), cpuSeconds: 0.2, peakMemoryBytes: 1234 })).toBe('succeeded');
    const a = store.sqlite.prepare('SELECT * FROM attempts WHERE job_id = ?').get(ID(1)) as Record<string, unknown>;
    expect(a).toMatchObject({ container: 'ct-1', exit_code: 0, reason: 'exit', cpu_seconds: 0.2, peak_memory_bytes: 1234 });
    expect(row(ID(1)).ended_at).toBe(now);
  });

  it('a failing attempt with retries left goes back to queued after exponential backoff', () => {
    add(ID(1), 2);
    let c = machine.claim(ID(1), 'a1')!;
    expect(machine.finish(ID(1), c.fence, exit(3))).toBe('queued');
    expect(row(ID(1)).run_after).toBe(now + 1000);
    expect(machine.claim(ID(1), 'a1')).toBeUndefined(); // still backing off
    now += 1000;
    c = machine.claim(ID(1), 'a1')!;
    expect(c.n).toBe(2);
    expect(machine.finish(ID(1), c.fence, exit(3))).toBe('queued');
    expect(row(ID(1)).run_after).toBe(now + 2000);
    now += 2000;
    c = machine.claim(ID(1), 'a1')!;
    expect(machine.finish(ID(1), c.fence, exit(3))).toBe('failed');
    expect(row(ID(1))).toMatchObject({ state: 'failed', exit_code: 3, attempt_count: 3, failures: 3 });
  });

  it('a timeout with no retries left ends timed_out', () => {
    add(ID(1));
    const c = machine.claim(ID(1), 'a1')!;
    expect(machine.finish(ID(1), c.fence, { exitCode: null, signal: 'SIGKILL', reason: 'timeout' })).toBe('timed_out');
  });

  it('a late write with a stale fence changes nothing', () => {
    add(ID(1));
    const first = machine.claim(ID(1), 'a1')!;
    now += 20_000;
    expect(machine.reapExpired()).toBe(1);
    const second = machine.claim(ID(1), 'a2')!;
    expect(second.fence).toBeGreaterThan(first.fence);
    expect(() => machine.finish(ID(1), first.fence, exit(0))).toThrow(LeaseLost);
    expect(() => machine.start(ID(1), first.fence, 'old')).toThrow(LeaseLost);
    expect(state(ID(1))).toBe('running');
    expect(machine.finish(ID(1), second.fence, exit(0))).toBe('succeeded');
  });

  it('a claim lost in a crash is never followed by one with the same fence', () => {
    add(ID(1));
    const lost = machine.claim(ID(1), 'a1')!;
    // What a power cut does to a claim committed without fsync: the row is as before it.
    store.sqlite.prepare(`UPDATE jobs SET state = 'queued', fence = 0, attempt_count = 0 WHERE id = ?`).run(ID(1));
    store.sqlite.prepare(`DELETE FROM attempts WHERE job_id = ?`).run(ID(1));
    const next = machine.claim(ID(1), 'a2')!;
    expect(next.fence).not.toBe(lost.fence);
    expect(() => machine.finish(ID(1), lost.fence, exit(0))).toThrow(LeaseLost);
  });

  it('lost leases are retried without using up the job retries, up to a platform limit', () => {
    add(ID(1), 0);
    for (let i = 0; i < MAX_PLATFORM_FAILURES; i++) {
      expect(machine.claim(ID(1), 'a1')).toBeDefined();
      now += 11_000;
      machine.reapExpired();
      expect(state(ID(1))).toBe('queued');
    }
    expect(row(ID(1)).failures).toBe(0);
    machine.claim(ID(1), 'a1');
    now += 11_000;
    machine.reapExpired();
    expect(state(ID(1))).toBe('failed');
  });

  it('heartbeats renew leases so a live agent keeps its attempts', () => {
    add(ID(1));
    const c = machine.claim(ID(1), 'a1')!;
    now += 8000;
    expect(machine.renewOne(ID(1), c.fence, 'a1')).toEqual({ cancelRequested: false });
    now += 8000;
    expect(machine.reapExpired()).toBe(0);
    expect(state(ID(1))).toBe('running');
  });

  it('cancelling a queued job ends it at once; a running one is marked and its agent told', () => {
    add(ID(1));
    add(ID(2));
    expect(machine.cancel(ID(1))).toBe('cancelled');
    const c = machine.claim(ID(2), 'a1')!;
    const told: unknown[] = [];
    machine.on('job:cancel', (e) => told.push(e));
    expect(machine.cancel(ID(2))).toBe('cancelling');
    expect(told).toEqual([{ jobId: ID(2), agent: 'a1', fence: c.fence }]);
    // Even a successful exit after a cancel request ends cancelled.
    expect(machine.finish(ID(2), c.fence, exit(0))).toBe('cancelled');
  });

  it('emits job:ended exactly when a job reaches a final state', () => {
    const ended: string[] = [];
    machine.on('job:ended', (e) => ended.push(`${e.jobId}:${e.state}`));
    add(ID(1), 1);
    let c = machine.claim(ID(1), 'a1')!;
    machine.finish(ID(1), c.fence, exit(1));
    expect(ended).toEqual([]);
    now += 1000;
    c = machine.claim(ID(1), 'a1')!;
    machine.finish(ID(1), c.fence, exit(0));
    expect(ended).toEqual([`${ID(1)}:succeeded`]);
  });

  it('remove deletes the job with its attempts and output', () => {
    add(ID(1));
    machine.claim(ID(1), 'a1');
    expect(machine.remove(ID(1))).toBe(true);
    expect(store.sqlite.prepare('SELECT count(*) FROM attempts').pluck().get()).toBe(0);
    expect(machine.remove(ID(1))).toBe(false);
  });
});

describe('database', () => {
  it('runs in WAL mode, and SQLite itself never fsyncs a grouped commit', async () => {
    const file = `/tmp/corral-wal-${process.pid}.db`;
    const s = openStore(file);
    expect(s.sqlite.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(s.sqlite.pragma('synchronous', { simple: true })).toBe(1);
    await s.close();
    new Database(file).close();
  });
});

describe('group commit', () => {
  /** A GroupCommit whose WAL fsyncs are held until the test lets them finish. */
  function held() {
    const file = `/tmp/corral-gc-${process.pid}-${Math.random().toString(36).slice(2)}.db`;
    const sqlite = new Database(file);
    sqlite.pragma('journal_mode = WAL');
    sqlite.exec('CREATE TABLE t (v TEXT)');
    const syncs: Array<{ path: string; done: (err: NodeJS.ErrnoException | null) => void }> = [];
    const gc = new GroupCommit(sqlite, { file, fdatasync: (fd, done) => syncs.push({ path: readlinkSync(`/proc/self/fd/${fd}`), done }) });
    const insert = (v: string) => () => sqlite.prepare('INSERT INTO t VALUES (?)').run(v);
    const close = () => {
      sqlite.close();
      for (const f of [file, `${file}-wal`, `${file}-shm`]) rmSync(f, { force: true });
    };
    return { file, sqlite, gc, syncs, insert, close };
  }
  const settled = (p: Promise<unknown>) => Promise.race([p.then(() => true), new Promise((r) => setTimeout(() => r(false), 20))]);

  it('answers a durable write only after its fsync of the WAL, and a lazy one at commit', async () => {
    const { file, sqlite, gc, syncs, insert, close } = held();
    const durable = gc.run(insert('a'));
    const lazy = gc.run(insert('b'), { durable: false });
    expect(await settled(lazy)).toBe(true);
    expect(await settled(durable)).toBe(false);
    expect(syncs).toHaveLength(1);
    expect(syncs[0]!.path).toBe(`${file}-wal`);
    syncs[0]!.done(null);
    expect(await settled(durable)).toBe(true);
    expect(sqlite.prepare('SELECT v FROM t ORDER BY v').pluck().all()).toEqual(['a', 'b']);
    close();
  });

  it('writes that commit while an fsync runs wait for the next one, and a failed fsync fails them', async () => {
    const { gc, syncs, insert, close } = held();
    const first = gc.run(insert('a'));
    await settled(first);
    const second = gc.run(insert('b'));
    const barrier = gc.durable();
    await settled(second);
    expect(syncs).toHaveLength(1); // the second waits: the running fsync may have missed its frames
    syncs[0]!.done(null);
    expect(await settled(first)).toBe(true);
    expect(await settled(second)).toBe(false);
    expect(syncs).toHaveLength(2);
    syncs[1]!.done(Object.assign(new Error('EIO'), { code: 'EIO' }));
    await expect(second).rejects.toThrow('EIO');
    await expect(barrier).rejects.toThrow('EIO');
    close();
  });

  it('rolls back only the write that failed', async () => {
    const s = openStore(':memory:');
    const ok = s.commit(() => s.sqlite.prepare(`INSERT INTO tenants (id, quota, created_at) VALUES ('a', '{}', 1)`).run());
    const bad = s.commit(() => {
      s.sqlite.prepare(`INSERT INTO tenants (id, quota, created_at) VALUES ('b', '{}', 1)`).run();
      throw new Error('no');
    });
    await ok;
    await expect(bad).rejects.toThrow('no');
    expect(s.sqlite.prepare('SELECT id FROM tenants').pluck().all()).toEqual(['a']);
  });
});
