/**
 * Soak (`npm run bench:soak`, not in CI): the fault harness's cluster (one gateway, agents in
 * network namespaces behind the harness's proxies, real LXC) without faults. First the
 * sustained rate is measured (SOAK_MEASURE_S seconds, 60: closed loop, SOAK_CLIENTS clients
 * submitting no-op jobs with ?wait), then no-op jobs are submitted open loop at 70 % of it for
 * SOAK_MINUTES (30). Every SOAK_SAMPLE_S (60) seconds it prints the gateway's and the agents'
 * RSS (the gateway's split into anonymous and file-backed memory, V8's used heap and memory
 * outside it) and open descriptors, the WAL's and the database's size, the containers the agents
 * hold and the p99 of submit → final (the ?wait answer); at the end each series near its 5-minute
 * mark against the last 5 minutes ("flat": medians within 10 %), and the fault checker's counts
 * over every accepted job.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Pool } from 'undici';
import { check, countsLine, readDb, rejectedLate, type DbView } from '../test/faults/checker.js';
import { startFaultCluster, type FaultCluster } from '../test/faults/cluster.js';
import { DB_FILE } from '../test/faults/datafs.js';
import { findLeaks } from '../test/faults/leaks.js';
import { removeStale } from '../test/faults/stale.js';
import type { Accepted } from '../test/faults/workload.js';
import { median, percentile, printTable, writeResults, type Row } from './lib.js';

const MINUTES = Number(process.env.SOAK_MINUTES ?? 30);
const SAMPLE_S = Number(process.env.SOAK_SAMPLE_S ?? 60);
const MEASURE_S = Number(process.env.SOAK_MEASURE_S ?? 60);
const CLIENTS = Number(process.env.SOAK_CLIENTS ?? 32);
const AGENTS = Number(process.env.SOAK_AGENTS ?? 4);
const DIR = process.env.SOAK_DIR ?? `/tmp/corral-faults-${process.pid}`;
const MARK_MIN = 5;

const say = (s: string) => process.stdout.write(s + '\n');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function rssKb(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** The gateway's resident memory split: anonymous (heaps: V8's, SQLite's page cache, buffers) and file or shared (the WAL index, mapped code). */
function rssSplitKb(pid: number | undefined): { anon: number; file: number } {
  if (!pid) return { anon: 0, file: 0 };
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? 0);
    return { anon: kb('RssAnon'), file: kb('RssFile') + kb('RssShmem') };
  } catch {
    return { anon: 0, file: 0 };
  }
}

/** V8's used heap and the memory it holds outside its heap (Buffers), from the gateway's /metrics. */
async function heapMiB(c: FaultCluster): Promise<{ heap: number; external: number }> {
  const text = await (await c.admin('GET', '/metrics')).text();
  const v = (name: string) => Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1] ?? NaN) / 2 ** 20;
  return { heap: v('nodejs_heap_size_used_bytes'), external: v('nodejs_external_memory_bytes') };
}

function fds(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

/** One client: submits no-op jobs, each with its own Idempotency-Key, and waits for their end. */
class Submitter {
  readonly accepted: Accepted[] = [];
  latencies: number[] = [];
  errors = 0;
  private readonly pool: Pool;
  private n = 0;

  constructor(
    private readonly c: FaultCluster,
    private readonly tenant: { id: string; token: string },
  ) {
    this.pool = new Pool(c.base, { connections: 256, keepAliveTimeout: 60_000 });
  }

  async one(): Promise<void> {
    const key = `soak-${process.pid}-${this.n++}`;
    const t0 = performance.now();
    try {
      const res = await this.pool.request({
        path: '/v1/jobs?wait=30',
        method: 'POST',
        headers: { authorization: `Bearer ${this.tenant.token}`, 'content-type': 'application/json', 'idempotency-key': key },
        body: JSON.stringify({ command: 'echo ok', timeout: 20 }),
      });
      const job = (await res.body.json()) as { id?: string };
      if (res.statusCode >= 300 || !job.id) {
        this.errors++;
        return;
      }
      this.latencies.push(performance.now() - t0);
      this.accepted.push({ id: job.id, tenant: this.tenant.id, kind: 'noop', key, at: Date.now(), tries: 1 });
    } catch {
      this.errors++;
    }
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

async function main(): Promise<void> {
  removeStale();
  const c = await startFaultCluster({ dir: DIR, agents: AGENTS, slots: 4, leaseMs: 15_000 });
  let db: DbView | undefined;
  const samples: Row[] = [];
  let sub: Submitter | undefined;
  try {
    const res = await c.admin('POST', '/v1/tenants', { id: 'soak', quota: { maxConcurrent: 4 * AGENTS, ratePerMinute: null, maxQueued: null } });
    if (res.status !== 201) throw new Error(`creating the tenant: ${res.status}`);
    const s = new Submitter(c, { id: 'soak', token: c.token(['--tenant', 'soak', '--scope', 'jobs:read jobs:write', '--ttl', '2d']) });
    sub = s;

    // Sustained rate: CLIENTS clients back to back, each waiting for its job's end.
    const measureEnd = Date.now() + MEASURE_S * 1000;
    const before = s.accepted.length;
    await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        while (Date.now() < measureEnd) await s.one();
      }),
    );
    const sustained = (s.accepted.length - before) / MEASURE_S;
    const rate = 0.7 * sustained;
    say(`sustained: ${sustained.toFixed(1)} jobs/s (${CLIENTS} clients, ${MEASURE_S} s); soak at 70 %: ${rate.toFixed(1)} jobs/s for ${MINUTES} min`);

    // Open loop: a job every 1/rate seconds whatever the answers do.
    const start = Date.now();
    const end = start + MINUTES * 60_000;
    const inflight = new Set<Promise<void>>();
    let next = start;
    let sampleAt = start + SAMPLE_S * 1000;
    s.latencies = [];
    while (Date.now() < end) {
      const now = Date.now();
      if (now >= sampleAt) {
        const lat = [...s.latencies].sort((a, b) => a - b);
        s.latencies = [];
        const agents = ((await (await c.admin('GET', '/v1/agents')).json()) as { agents: Array<{ pool?: { containers?: number } }> }).agents;
        const split = rssSplitKb(c.gateway.pid);
        const mem = await heapMiB(c);
        const row: Row = {
          min: Math.round((now - start) / 6000) / 10,
          'gateway RSS MiB': rssKb(c.gateway.pid) / 1024,
          'gateway anon MiB': split.anon / 1024,
          'gateway file MiB': split.file / 1024,
          'gateway heap MiB': mem.heap,
          'gateway external MiB': mem.external,
          'agents RSS MiB': c.agents.reduce((n, a) => n + rssKb(a.proc.pid), 0) / 1024,
          'gateway fds': fds(c.gateway.pid),
          'agents fds': c.agents.reduce((n, a) => n + fds(a.proc.pid), 0),
          'WAL MiB': c.data.walBytes() / 2 ** 20,
          'db MiB': statSync(join(c.data.dir, DB_FILE)).size / 2 ** 20,
          containers: agents.reduce((n, a) => n + (a.pool?.containers ?? 0), 0),
          'p99 ms': percentile(lat, 99),
          jobs: lat.length,
          errors: s.errors,
        };
        samples.push(row);
        say(Object.entries(row).map(([k, v]) => `${k}=${typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(1) : v}`).join(' '));
        sampleAt += SAMPLE_S * 1000;
      }
      if (now >= next) {
        const p = s.one().finally(() => inflight.delete(p));
        inflight.add(p);
        next += 1000 / rate;
      } else await sleep(Math.min(next - now, 5));
    }
    await Promise.all(inflight);
    const dbFile = join(c.data.dir, DB_FILE);
    await c.stop();
    db = readDb(dbFile);
  } finally {
    await sub?.close();
    await c.teardown();
  }

  // Each series at the 5-minute mark against the end of the soak. Sawtooth series (the WAL between
  // checkpoints, the V8 heap between collections, connections and containers coming and going)
  // are compared by the medians of the samples within two and a half minutes of the mark and of
  // the last five minutes, so one sample at a peak does not pass for growth; a leak moves the
  // median. The sample furthest from the mark is shown as well.
  const mark = samples.find((r) => Number(r.min) >= MARK_MIN) ?? samples[0];
  const markMin = Number(mark?.min ?? 0);
  const lastMin = Number(samples[samples.length - 1]?.min ?? 0);
  const series = ['gateway RSS MiB', 'gateway anon MiB', 'gateway heap MiB', 'agents RSS MiB', 'gateway fds', 'agents fds', 'WAL MiB', 'db MiB', 'containers', 'p99 ms'];
  const flat = series.map((k) => {
    const at = (from: number, to: number) => median(samples.filter((r) => Number(r.min) >= from && Number(r.min) <= to).map((r) => Number(r[k])));
    const base = at(markMin - 2.5, markMin + 2.5);
    const end = at(Math.max(markMin, lastMin - 5), lastMin);
    const after = samples.filter((r) => Number(r.min) >= markMin).map((r) => Number(r[k]));
    const worst = after.reduce((w, v) => (Math.abs(v - base) > Math.abs(w - base) ? v : w), base);
    const dev = base === 0 ? (end === 0 ? 0 : Infinity) : (end - base) / base;
    const pct = (v: number) => `${(v * 100).toFixed(1)} %`;
    return {
      series: k,
      [`median near ${markMin} min`]: base,
      'median, last 5 min': end,
      change: pct(dev),
      flat: k === 'db MiB' ? '(grows with jobs)' : Math.abs(dev) <= 0.1 ? 'yes' : 'NO',
      'furthest sample': worst,
      'its change': pct(base === 0 ? 0 : (worst - base) / base),
    };
  });
  printTable('soak: each series at its 5-minute mark against the last 5 minutes (flat: medians within 10 %)', flat);
  const leaks = findLeaks(c.run, DIR);
  const accepted = sub.accepted;
  const { counts } = check(accepted, db!, c.frames, rejectedLate(c.gatewayLog));
  say(`results: ${writeResults('soak', { minutes: MINUTES, samples, flat, accepted: accepted.length, leaks })}`);
  say(countsLine({ ...counts, leaked: leaks.length }));
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`soak failed: ${(err as Error).stack ?? err}\n`);
    process.exit(2);
  },
);
