import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { IdmapAllocator, RangeClaims, RANGE_SIZE } from '../agent/lxc/idmap.js';
import { killed, ROOT } from './helpers/process.js';

/** Four ranges of a made-up host, and the images' range beside them. */
const IMAGE_BASE = 1_000_000;
const SLOTS = [0, 1, 2, 3].map((i) => IMAGE_BASE + (i + 1) * RANGE_SIZE);
const [S0, S1, S2, S3] = SLOTS as [number, number, number, number];

const byValue = (x: number, y: number) => x - y;

let dir: string;
let lockDir: string;
const children: ChildProcess[] = [];
/** Allocators and claims of this process, closed after each test. */
const holders: Array<{ close(): void }> = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'corral-idmap-'));
  lockDir = join(dir, 'idranges');
});
afterEach(async () => {
  for (const c of children.splice(0)) await killed(c);
  for (const h of holders.splice(0)) h.close();
  rmSync(dir, { recursive: true, force: true });
});

/** An allocator in this process, as an agent named `name` builds it; `busy` holds the ranges with live containers. */
function allocator(name: string, busy = new Set<number>()): IdmapAllocator {
  const a = new IdmapAllocator({ file: join(dir, `idmap-${name}.json`), slots: SLOTS, imageBase: IMAGE_BASE, inUse: (b) => busy.has(b), lockDir });
  holders.push(a);
  return a;
}

function claims(): RangeClaims {
  const c = new RangeClaims(lockDir);
  holders.push(c);
  return c;
}

interface Holder {
  child: ChildProcess;
  /** Tenant → range, as the child's allocator gave them out. */
  ranges: Record<string, number>;
  spares: number[];
  /** Releases a spare range in the child, and resolves once it has. */
  release(base: number): Promise<void>;
}

/**
 * Another agent on the same host: a child process with an allocator (the built code, as an agent
 * runs it) over the same ranges and lock directory, which gives `tenants` their ranges, takes
 * `spares` spare ranges, and holds them until it is told to release one or is killed.
 */
async function otherAgent(name: string, o: { tenants?: string[]; spares?: number }): Promise<Holder> {
  const script = `
    import { createInterface } from 'node:readline';
    import { IdmapAllocator } from ${JSON.stringify(join(ROOT, 'dist', 'agent', 'lxc', 'idmap.js'))};
    const o = JSON.parse(process.env.HOLDER);
    const out = (m) => process.stdout.write(JSON.stringify(m) + '\\n');
    try {
      const a = new IdmapAllocator({ file: o.file, slots: o.slots, imageBase: o.imageBase, inUse: () => false, lockDir: o.lockDir });
      const ranges = Object.fromEntries(o.tenants.map((t) => [t, a.forTenant(t)]));
      const spares = Array.from({ length: o.spares }, () => a.spare());
      out({ ranges, spares });
      createInterface({ input: process.stdin }).on('line', (base) => {
        a.release(Number(base));
        out({ released: Number(base) });
      });
    } catch (err) {
      out({ error: String(err) });
    }`;
  const holder = { file: join(dir, `idmap-${name}.json`), slots: SLOTS, imageBase: IMAGE_BASE, lockDir, tenants: o.tenants ?? [], spares: o.spares ?? 0 };
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, HOLDER: JSON.stringify(holder) }, stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const next = async () => JSON.parse(((await lines.next()).value as string | undefined) ?? '{"error":"the child exited"}') as { ranges: Record<string, number>; spares: number[]; error?: string };
  const first = await next();
  if (first.error) throw new Error(first.error);
  return {
    child,
    ranges: first.ranges,
    spares: first.spares,
    async release(base) {
      child.stdin!.write(`${base}\n`);
      await next();
    },
  };
}

describe('id ranges are claimed host-wide, so agents sharing a host never share a range', () => {
  it('two agents in two processes over the same ranges give their tenants different ranges', async () => {
    const other = await otherAgent('b', { tenants: ['t1', 't2'] });
    const busy = new Set<number>();
    const mine = allocator('a', busy);
    const here = [mine.forTenant('t3'), mine.forTenant('t4')];
    const there = Object.values(other.ranges);
    expect(new Set([...here, ...there]).size).toBe(4);
    expect([...here, ...there].sort(byValue)).toEqual(SLOTS);

    // Every range is held — two by the other agent, two with live containers here — so a fifth
    // tenant gets the error, and never a range the other agent holds.
    for (const b of here) busy.add(b);
    expect(() => mine.forTenant('t5')).toThrow(/no free id range/);
    // With its containers gone, this agent gives its least recently used tenant's range up, and
    // still none of the other agent's.
    busy.clear();
    expect(here).toContain(mine.forTenant('t5'));
  });

  it('a range claimed by a process that is killed with SIGKILL is free again at once', async () => {
    const other = await otherAgent('b', { tenants: ['t1'] });
    expect(other.ranges.t1).toBe(S0);
    const mine = allocator('a');
    expect(mine.forTenant('t2')).toBe(S1);
    await killed(other.child, 'SIGKILL');
    expect(allocator('c').forTenant('t3')).toBe(S0);
  });

  it('a recorded tenant range that another process holds now is forgotten when the allocator starts, and the record says so', async () => {
    writeFileSync(join(dir, 'idmap-a.json'), JSON.stringify({ tenants: { t1: S0, t2: S1 }, used: { t1: 1, t2: 2 } }));
    // While agent a was down, agent b took S0 for a tenant of its own.
    const other = await otherAgent('b', { tenants: ['t9'] });
    expect(other.ranges.t9).toBe(S0);

    const mine = allocator('a');
    expect(mine.rangeOf('t1')).toBeUndefined();
    expect(mine.rangeOf('t2')).toBe(S1);
    expect(JSON.parse(readFileSync(join(dir, 'idmap-a.json'), 'utf8')).tenants).toEqual({ t2: S1 });
    expect(mine.forTenant('t1')).toBe(S2);
  });

  it('a recorded tenant range no one holds is claimed again when the allocator starts', async () => {
    writeFileSync(join(dir, 'idmap-a.json'), JSON.stringify({ tenants: { t1: S2 }, used: { t1: 1 } }));
    const mine = allocator('a');
    expect(mine.rangeOf('t1')).toBe(S2);
    const other = await otherAgent('b', { tenants: ['t7', 't8', 't9'] });
    expect(Object.values(other.ranges).sort(byValue)).toEqual([S0, S1, S3]);
  });

  it('a range refused because another process held it is tried again, after the others', async () => {
    const other = await otherAgent('b', { tenants: ['t1'] });
    const mine = allocator('a');
    expect(mine.forTenant('t2')).toBe(S1);
    await killed(other.child, 'SIGKILL');
    expect([mine.forTenant('t3'), mine.forTenant('t4'), mine.forTenant('t5')]).toEqual([S2, S3, S0]);
  });

  it('a released spare range can be taken by another process', async () => {
    const other = await otherAgent('b', { spares: 2 });
    expect(other.spares).toEqual([S0, S1]);
    const mine = allocator('a');
    expect(mine.forTenant('t1')).toBe(S2);
    await other.release(S1);
    // S1 was refused a moment ago, so the free S3 comes first; then S1.
    expect([mine.forTenant('t2'), mine.forTenant('t3')]).toEqual([S3, S1]);
  });

  it('a spare adopted by a tenant, and an idle tenant\'s range given to another tenant, stay claimed', async () => {
    const mine = allocator('a');
    const spare = mine.spare();
    mine.adopt(spare, 't1');
    mine.release(spare); // as the pool does for a container it recycles; the range is t1's now
    expect(mine.forTenant('t2')).toBe(S1);
    expect(mine.forTenant('t3')).toBe(S2);
    expect(mine.forTenant('t4')).toBe(S3);
    // Every range is this agent's: a fifth tenant takes the least recently used one (t1's).
    expect(mine.forTenant('t5')).toBe(S0);
    expect(mine.rangeOf('t1')).toBeUndefined();
    await expect(otherAgent('c', { tenants: ['t9'] })).rejects.toThrow(/no free id range/);
  });

  it('a released spare whose container is still being destroyed stays claimed until a later call finds it empty', () => {
    const busy = new Set<number>();
    const a = allocator('a', busy);
    const [first, second] = [a.spare(), a.spare()];
    busy.add(first).add(second);
    a.release(first);
    expect(allocator('b').spare()).toBe(S2);
    busy.delete(first);
    a.release(second); // `first` is empty now: its claim goes; `second` keeps its own
    expect(allocator('c').spare()).toBe(first);
    busy.delete(second);
    a.close();
    expect(allocator('d').spare()).toBe(second);
  });
});

describe('claims within one process', () => {
  it('two allocators in one process never give their tenants the same range', () => {
    const a = allocator('a');
    const b = allocator('b');
    const got = [a.forTenant('t1'), b.forTenant('t2'), a.forTenant('t3'), b.spare()];
    expect(got.sort(byValue)).toEqual(SLOTS);
    expect(() => allocator('c').spare()).toThrow(/no free id range/);
  });

  it('a claim refused within the process leaves the holder\'s lock in place for other processes', async () => {
    const mine = claims();
    const again = claims();
    expect(mine.claim(S0)).toBe(true);
    expect(again.claim(S0)).toBe(false);
    // Opening and closing the lock file here would have dropped the process's POSIX lock on it.
    const other = await otherAgent('b', { tenants: ['t1'] });
    expect(other.ranges.t1).toBe(S1);
    mine.release(S0);
    expect(again.claim(S0)).toBe(true);
  });

  it('the lock directory is created private, and one others may write is refused', () => {
    claims();
    expect(statSync(lockDir).mode & 0o777).toBe(0o700);
    const open = mkdtempSync(join(dir, 'open-'));
    chmodSync(open, 0o777);
    expect(() => new RangeClaims(open)).toThrow(/writable by group or others/);
  });
});
