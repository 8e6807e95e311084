/**
 * Queue core throughput through the gateway's own commit path, on a real SQLite file in WAL mode:
 * every job is submitted (a durable commit, as POST /v1/jobs does), claimed (in one scheduler
 * transaction per batch, not fsynced on its own, as JobMachine.claim) and finished (a durable
 * commit, as an agent's `ended` frame), BATCH jobs in flight at once.
 *
 *   durable, group commit   — the gateway's default: GroupCommit + WalSync, each durable commit
 *                             answered after an fdatasync of the WAL; the fdatasyncs are counted.
 *   durable, fsync per commit — the baseline: every commit its own transaction, fsynced by SQLite
 *                             inside COMMIT (synchronous = FULL), one fsync per commit.
 *   not durable (sync=normal) — no fsync at all: what the disk costs, by difference.
 *
 * Then the event loop's delay under the same durable load, with the WAL checkpointed on a worker
 * thread (the default) against SQLite's automatic checkpoint inside COMMIT (the old way).
 */
import { fdatasync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { lazyTransaction } from '../src/db/group-commit.js';
import { openStore, type StoreOptions } from '../src/db/open.js';
import { newJobId } from '../src/ids.js';
import { commitTransitions } from '../src/queue/commit.js';
import { JobMachine } from '../src/queue/machine.js';
import { median, printTable, writeResults } from './lib.js';

const RUNS = Number(process.env.RUNS ?? 3);
const JOBS = Number(process.env.JOBS ?? 20_000);
const BATCH = Number(process.env.BATCH ?? 200);
/** In flight while the event loop's delay is measured: few, so a turn's own work stays short and a stall shows. */
const CLIENTS = Number(process.env.CLIENTS ?? 16);
/** Where the database lives: the disk under test (the default temp dir may be a tmpfs). */
const DIR = process.env.BENCH_DIR ?? tmpdir();

interface Case {
  label: string;
  sync: 'full' | 'normal';
  grouped: boolean;
  checkpoint: 'worker' | 'inline';
  jobs: number;
  /** Jobs in flight at once: the work one event-loop turn does. */
  batch: number;
  /** A pause between batches, so the loop idles as a gateway's does and a stall stands out from the load. */
  paceMs?: number;
}

interface Outcome {
  jobsPerSecond: number;
  fsyncs: number;
  commits: number;
  loopDelayP50Ms: number;
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
  maxWalBytes: number;
}

async function once(c: Case): Promise<Outcome> {
  const dir = mkdtempSync(join(DIR, 'corral-bench-queue-'));
  const file = join(dir, 'q.db');
  let fsyncs = 0;
  const o: StoreOptions = {
    checkpoint: c.checkpoint,
    // The real fdatasync, counted: a durable answer is one an fdatasync of the WAL covered.
    fdatasync: (fd, cb) => {
      fsyncs++;
      fdatasync(fd, cb);
    },
  };
  const store = openStore(file, c.sync, c.grouped, o);
  const m = new JobMachine(store.sqlite, { leaseMs: 60_000 });
  const spec = JSON.stringify({ command: 'true', image: 'busybox', timeout: 60, retries: 0, env: {}, fresh: false, network: false, maxOutputBytes: 1 << 20 });
  const ids = Array.from({ length: c.jobs }, () => newJobId());
  let commits = 0;
  let maxWalBytes = 0;
  const wal = () => {
    try {
      maxWalBytes = Math.max(maxWalBytes, statSync(`${file}-wal`).size);
    } catch {
      // not created yet
    }
  };
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const started = performance.now();
  for (let i = 0; i < c.jobs; i += c.batch) {
    const slice = ids.slice(i, i + c.batch);
    await Promise.all(
      slice.map((id) => {
        commits++;
        return store.commit(() => m.enqueue({ id, tenant: 't', name: null, image: 'busybox', spec, retries: 0, createdAt: Date.now() - 1 }));
      }),
    );
    const fences = lazyTransaction(store.sqlite, () => slice.map((id) => m.claim(id, 'agent')!.fence));
    await Promise.all(
      slice.map((id, k) => {
        commits++;
        return commitTransitions(store.commit, m, () => m.finish(id, fences[k]!, { exitCode: 0, signal: null, reason: 'exit', cpuSeconds: 0.001, peakMemoryBytes: 1 }));
      }),
    );
    wal();
    if (c.paceMs) await new Promise((r) => setTimeout(r, c.paceMs));
  }
  const seconds = (performance.now() - started) / 1000;
  loop.disable();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  return {
    jobsPerSecond: c.jobs / seconds,
    // Ungrouped, SQLite fsyncs inside each COMMIT (not through WalSync): one per commit.
    fsyncs: c.sync === 'full' && !c.grouped ? commits : fsyncs,
    commits,
    loopDelayP50Ms: loop.percentile(50) / 1e6,
    loopDelayP99Ms: loop.percentile(99) / 1e6,
    loopDelayMaxMs: loop.max / 1e6,
    maxWalBytes,
  };
}

/** Runs the cases in turn, RUNS rounds: a machine that slows down for a while slows every case alike. */
async function measure(cases: Case[]): Promise<Outcome[][]> {
  const out: Outcome[][] = cases.map(() => []);
  for (let r = 0; r < RUNS; r++) for (const [i, c] of cases.entries()) out[i]!.push(await once(c));
  return out;
}

const mb = (b: number) => +(b / 1048576).toFixed(1);

const throughput: Case[] = [
  { label: 'durable (fdatasync), group commit', sync: 'full', grouped: true, checkpoint: 'worker', jobs: JOBS, batch: BATCH },
  { label: 'durable (fsync), one per commit', sync: 'full', grouped: false, checkpoint: 'worker', jobs: Math.min(JOBS, 2000), batch: BATCH },
  { label: 'not durable (sync=normal, no fsync)', sync: 'normal', grouped: true, checkpoint: 'worker', jobs: JOBS, batch: BATCH },
];
const rows = [];
for (const [i, xs] of (await measure(throughput)).entries()) {
  const c = throughput[i]!;
  const rates = xs.map((x) => x.jobsPerSecond);
  const fsyncs = xs.reduce((n, x) => n + x.fsyncs, 0);
  const commits = xs.reduce((n, x) => n + x.commits, 0);
  rows.push({
    case: c.label,
    jobs: c.jobs,
    runs: RUNS,
    'median jobs/s': Math.round(median(rates)),
    'min jobs/s': Math.round(Math.min(...rates)),
    'max jobs/s': Math.round(Math.max(...rates)),
    'fsyncs/job': +(fsyncs / (c.jobs * RUNS)).toFixed(3),
    'commits/fsync': fsyncs === 0 ? '-' : +(commits / fsyncs).toFixed(1),
  });
}
printTable(`queue core: submit + claim + finish through the gateway's commit path (${BATCH} in flight; file in ${DIR}; durable = answered after an fsync)`, rows);

const stalls: Case[] = [
  { label: 'WAL checkpointed on a worker thread', sync: 'full', grouped: true, checkpoint: 'worker', jobs: JOBS, batch: CLIENTS, paceMs: 1 },
  { label: 'SQLite auto-checkpoint inside COMMIT', sync: 'full', grouped: true, checkpoint: 'inline', jobs: JOBS, batch: CLIENTS, paceMs: 1 },
];
const stallRows = [];
for (const [i, xs] of (await measure(stalls)).entries()) {
  const c = stalls[i]!;
  stallRows.push({
    case: c.label,
    jobs: c.jobs,
    runs: RUNS,
    'median jobs/s': Math.round(median(xs.map((x) => x.jobsPerSecond))),
    'loop delay p50 ms': +median(xs.map((x) => x.loopDelayP50Ms)).toFixed(2),
    'loop delay p99 ms': +median(xs.map((x) => x.loopDelayP99Ms)).toFixed(2),
    'loop delay max ms': +Math.max(...xs.map((x) => x.loopDelayMaxMs)).toFixed(2),
    'max WAL MiB': Math.max(...xs.map((x) => mb(x.maxWalBytes))),
  });
}
printTable(`event-loop delay under durable load, ${CLIENTS} jobs in flight then 1 ms idle (median of runs for p99, worst run for max)`, stallRows);
process.stdout.write(`results: ${writeResults('queue', { batch: BATCH, clients: CLIENTS, dir: DIR, rows, stalls: stallRows })}\n`);
