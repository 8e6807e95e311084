/**
 * Queue core throughput: enqueue + claim + finish per job, on a real SQLite file in WAL mode
 * with synchronous=FULL (every commit fsynced).
 *
 *   per-op   — each transition its own transaction (one fsync each): the floor without grouping.
 *   grouped  — transitions grouped per transaction, as the gateway does (group commit of
 *              submits, one transaction per scheduler pass, one per batch of agent frames).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../src/db/open.js';
import { newJobId } from '../src/ids.js';
import { JobMachine } from '../src/queue/machine.js';
import { median, printTable, writeResults } from './lib.js';

const RUNS = Number(process.env.RUNS ?? 3);
const JOBS = Number(process.env.JOBS ?? 20_000);
const BATCH = Number(process.env.BATCH ?? 200);

function once(mode: 'per-op' | 'grouped', jobs: number, sync: 'full' | 'normal'): number {
  const dir = mkdtempSync(join(tmpdir(), 'corral-bench-queue-'));
  const store = openStore(join(dir, 'q.db'), sync);
  const m = new JobMachine(store.sqlite, { leaseMs: 60_000 });
  const spec = JSON.stringify({ command: 'true', image: 'busybox', timeout: 60, retries: 0, env: {}, fresh: false, network: false, maxOutputBytes: 1 << 20 });
  const ids = Array.from({ length: jobs }, () => newJobId());
  const tx = (fn: () => void) => store.sqlite.transaction(fn)();
  const started = performance.now();
  const batch = mode === 'grouped' ? BATCH : 1;
  for (let i = 0; i < jobs; i += batch) {
    const slice = ids.slice(i, i + batch);
    tx(() => {
      for (const id of slice) m.enqueue({ id, tenant: 't', name: null, image: 'busybox', spec, retries: 0, createdAt: Date.now() - 1 });
    });
    const fences: number[] = [];
    tx(() => {
      for (const id of slice) fences.push(m.claim(id, 'agent')!.fence);
    });
    tx(() => {
      slice.forEach((id, k) => m.finish(id, fences[k]!, { exitCode: 0, signal: null, reason: 'exit', cpuSeconds: 0.001, peakMemoryBytes: 1 }));
    });
  }
  const seconds = (performance.now() - started) / 1000;
  store.close();
  rmSync(dir, { recursive: true, force: true });
  return jobs / seconds;
}

const cases: Array<{ mode: 'per-op' | 'grouped'; sync: 'full' | 'normal'; jobs: number }> = [
  { mode: 'grouped', sync: 'full', jobs: JOBS },
  { mode: 'per-op', sync: 'full', jobs: Math.min(JOBS, 2000) },
  { mode: 'grouped', sync: 'normal', jobs: JOBS },
];
const rows = cases.map((c) => {
  const rates = Array.from({ length: RUNS }, () => once(c.mode, c.jobs, c.sync));
  return { case: `${c.mode} sync=${c.sync}`, jobs: c.jobs, runs: RUNS, 'median jobs/s': Math.round(median(rates)), 'min jobs/s': Math.round(Math.min(...rates)), 'max jobs/s': Math.round(Math.max(...rates)) };
});
printTable(`queue core: enqueue + claim + finish (batch ${BATCH}; target ≥ 20,000 jobs/s with durability on)`, rows);
process.stdout.write(`results: ${writeResults('queue', { batch: BATCH, rows })}\n`);
