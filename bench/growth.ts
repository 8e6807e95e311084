/**
 * What a big database costs: the same compiled gateway on a near-empty database (1,000 finished
 * jobs, so a first page of jobs is full) and on one holding 1,000,000 finished jobs from the last 24 h (attempts for all, output for a share, a day of
 * usage rows and idempotency keys), side by side in one run over HTTP on loopback. A third
 * gateway serves a copy of the big database with a 64 MiB page cache instead of the default
 * 16 MiB, to show what the smaller cache costs. The gateways run at once and take turns, so
 * drift in the machine's speed falls on all alike.
 *
 *   reads  — GET /metrics, GET /v1/usage, GET /v1/jobs (first page): sequential requests, the
 *            gateways taking turns request by request.
 *   submit — POST /v1/jobs with autocannon, as bench/submit.ts does.
 *
 * Targets: the big database keeps ≥ 0.8× the submit throughput and ≤ 1.5× every latency.
 */
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import Database from 'better-sqlite3';
import { mintToken } from '../src/auth/tokens.js';
import { openStore } from '../src/db/open.js';
import { newJobId } from '../src/ids.js';
import { packageRoot } from '../src/paths.js';
import { utcDay } from '../src/usage/meter.js';
import { median, printTable, summarize, writeResults, type Row } from './lib.js';

const JOBS = Number(process.env.JOBS ?? 1_000_000);
const FEW = Number(process.env.FEW ?? 1_000);
const RUNS = Number(process.env.RUNS ?? 3);
const SECONDS = Number(process.env.SECONDS ?? 5);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 64);
// A p99 needs enough samples to mean something: of 50 it is the slowest one or two, and a single
// collection pause or scheduler hiccup in any of the three gateways decides it.
const READS = Number(process.env.READS ?? 1000);
const SECRET = 'bench-secret-bench-secret-bench-secret-0123';
const TENANT = 'bench';
const DAY_MS = 86_400_000;
/** The page cache of the third gateway, against the default (16 MiB). */
const BIG_CACHE_MIB = 64;

/** A fresh data directory with the schema applied and the bench tenant; `jobs` finished jobs in it. */
async function prepareData(jobs: number): Promise<{ dir: string; buildMs: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'corral-bench-growth-'));
  const file = join(dir, 'corral.db');
  // The gateway's own migrations make the schema; the rows then go in without a journal or
  // fsyncs (a bench database need not survive a crash while it is built).
  await openStore(file, 'normal').close();
  const db = new Database(file);
  db.pragma('journal_mode = OFF');
  db.pragma('synchronous = OFF');
  db.pragma('cache_size = -262144');
  const started = performance.now();
  const now = Date.now();
  const big = 10_000_000;
  db.prepare(`INSERT INTO tenants (id, quota, created_at) VALUES (?, ?, ?)`).run(TENANT, JSON.stringify({ ratePerMinute: big, maxQueued: big }), now - 2 * DAY_MS);
  if (jobs > 0) {
    const insertJob = db.prepare(
      `INSERT INTO jobs (id, tenant, state, image, spec, memory, cpu, max_output_bytes, retries, failures, attempt_count, fence,
         run_after, exit_code, reason, created_at, started_at, ended_at, output_bytes)
       VALUES (?, ?, ?, 'busybox', ?, 268435456, 1, 1048576, 0, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const insertAttempt = db.prepare(
      `INSERT INTO attempts (job_id, n, tenant, agent, fence, container, claimed_at, started_at, ended_at, exit_code, reason,
         cpu_seconds, wall_seconds, peak_memory_bytes)
       VALUES (?, 1, ?, 'agent-1', ?, 'corral-c-1', ?, ?, ?, ?, ?, 0.004, 0.003, 1048576)`,
    );
    const insertOutput = db.prepare(`INSERT INTO output (job_id, attempt, stream, data) VALUES (?, 1, 'stdout', ?)`);
    const insertKey = db.prepare(`INSERT INTO idempotency_keys (tenant, key, body_hash, job_id, created_at) VALUES (?, ?, '', ?, ?)`);
    const spec = JSON.stringify({ maxOutputBytes: 1048576, command: 'echo hello', image: 'busybox', timeout: 10, retries: 0, env: {}, fresh: false, network: false, memory: 268435456, cpu: 1 });
    const hello = Buffer.from('hello\n');
    const states = { succeeded: 0, failed: 0, timed_out: 0, cancelled: 0 };
    db.transaction(() => {
      for (let i = 0; i < jobs; i++) {
        // Spread evenly over the last 24 h, oldest first, as a day of traffic leaves them.
        const created = now - DAY_MS + Math.floor((i * DAY_MS) / jobs);
        const id = newJobId(created);
        const k = i % 100;
        const [state, reason, exit] = k < 95 ? (['succeeded', 'exit', 0] as const) : k < 98 ? (['failed', 'exit', 1] as const) : k < 99 ? (['timed_out', 'timeout', null] as const) : (['cancelled', 'cancelled', null] as const);
        states[state]++;
        const ended = created + 5;
        insertJob.run(id, TENANT, state, spec, state === 'failed' ? 1 : 0, i + 1, created, exit, reason, created, created + 1, ended, i % 3 === 0 ? 6 : 0);
        insertAttempt.run(id, TENANT, i + 1, created, created + 1, ended, exit, reason);
        // A third of the jobs wrote output, as `echo` does.
        if (i % 3 === 0) insertOutput.run(id, hello);
        if (i % 10 === 0) insertKey.run(TENANT, `key-${i}`, id, created);
      }
      // What the usage meter would have rolled up for them (two UTC days at most).
      const perDay = new Map<string, number>();
      for (let i = 0; i < jobs; i++) {
        const d = utcDay(now - DAY_MS + Math.floor((i * DAY_MS) / jobs));
        perDay.set(d, (perDay.get(d) ?? 0) + 1);
      }
      for (const [day, n] of perDay) {
        db.prepare(
          `INSERT INTO usage_daily (tenant, day, jobs, attempts, cpu_seconds, wall_seconds, gb_seconds, peak_memory_bytes, failures)
           VALUES (?, ?, ?, ?, ?, ?, ?, 1048576, ?)`,
        ).run(TENANT, day, n, n, n * 0.004, n * 0.003, n * 0.003 * 0.25, JSON.stringify({ exit: Math.round(n * 0.03), timeout: Math.round(n * 0.01), cancelled: Math.round(n * 0.01) }));
      }
      for (let h = 0; h < 24; h++) {
        const hour = new Date(now - h * 3_600_000).toISOString().slice(0, 13);
        db.prepare(`INSERT OR IGNORE INTO usage_hourly (tenant, hour, jobs, failures) VALUES (?, ?, ?, ?)`).run(TENANT, hour, Math.round(jobs / 24), Math.round(jobs / 24 / 20));
      }
    })();
  }
  db.pragma('journal_mode = WAL');
  db.close();
  const buildMs = performance.now() - started;
  return { dir, buildMs };
}

async function startGateway(dir: string, env: Record<string, string> = {}) {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const child = spawn(process.execPath, [join(packageRoot(), 'dist/src/cli/main.js'), 'gateway'], {
    env: { ...process.env, CORRAL_DATA: dir, CORRAL_PORT: String(port), CORRAL_JWT_SECRET: SECRET, CORRAL_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // Kept to explain a failed start; the first start's admin token is read from its file.
  let log = '';
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const base = `http://127.0.0.1:${port}`;
  const startedAt = performance.now();
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) break;
    } catch {
      if (i > 1200) throw new Error(`gateway did not start:\n${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const startMs = performance.now() - startedAt;
  const admin = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
  const token = await mintToken({ secret: new TextEncoder().encode(SECRET), issuer: 'corral', audience: 'corral', sub: 'bench', tenant: TENANT, scopes: ['jobs:write', 'jobs:read'], ttlSeconds: 3600 });
  return {
    base,
    admin,
    token,
    startMs,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

type Gw = Awaited<ReturnType<typeof startGateway>>;

/**
 * Latency of `n` sequential GETs of `path` on each gateway, in ms, taking turns request by request
 * so a burst of noise on the machine falls on every gateway alike.
 */
async function reads(gws: Gw[], path: string, as: 'admin' | 'tenant', n: number): Promise<number[][]> {
  const out: number[][] = gws.map(() => []);
  for (let i = 0; i < n + 3; i++) {
    for (const [k, g] of gws.entries()) {
      const t = performance.now();
      const res = await fetch(`${g.base}${path}`, { headers: { authorization: `Bearer ${as === 'admin' ? g.admin : g.token}` } });
      await res.arrayBuffer();
      if (!res.ok) throw new Error(`${path}: ${res.status}`);
      if (i >= 3) out[k]!.push(performance.now() - t); // the first few warm the JIT and caches
    }
  }
  return out;
}

async function submit(g: Gw, seconds: number) {
  const result = await autocannon({
    url: `${g.base}/v1/jobs`,
    method: 'POST',
    connections: CONNECTIONS,
    duration: seconds,
    headers: { authorization: `Bearer ${g.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ command: 'echo hello', timeout: 10 }),
  });
  return { rps: result['2xx'] / seconds, p50: result.latency.p50, p99: result.latency.p99, errors: result.non2xx + result.errors };
}

const empty = await prepareData(FEW);
process.stdout.write(`building a database of ${JOBS.toLocaleString('en')} finished jobs…\n`);
const full = await prepareData(JOBS);
process.stdout.write(`built in ${(full.buildMs / 1000).toFixed(1)} s\n`);
// The same big database again, served with a 64 MiB page cache instead of the default 16 MiB.
const fullCopy = mkdtempSync(join(tmpdir(), 'corral-bench-growth-'));
cpSync(full.dir, fullCopy, { recursive: true });
const gws = { empty: await startGateway(empty.dir), full: await startGateway(full.dir), fullCache: await startGateway(fullCopy, { CORRAL_DB_CACHE_MIB: String(BIG_CACHE_MIB) }) };
const cases = ['empty', 'full', 'fullCache'] as const;

const READ_PATHS = [
  { name: 'GET /metrics', path: '/metrics', as: 'admin' },
  { name: 'GET /v1/usage', path: '/v1/usage', as: 'tenant' },
  { name: 'GET /v1/jobs (first page)', path: '/v1/jobs', as: 'tenant' },
] as const;
const readSamples: Record<string, Record<string, number[]>> = {};
for (const r of READ_PATHS) {
  const samples = await reads(cases.map((c) => gws[c]), r.path, r.as, READS);
  readSamples[r.name] = Object.fromEntries(cases.map((c, k) => [c, samples[k]!]));
}
const submits: Record<string, Array<Awaited<ReturnType<typeof submit>>>> = { empty: [], full: [], fullCache: [] };
for (const c of cases) await submit(gws[c], 1); // warm up
for (let r = 0; r < RUNS; r++) for (const c of cases) submits[c]!.push(await submit(gws[c], SECONDS));
for (const c of cases) await gws[c].stop();

const rows: Row[] = [];
const small = `${FEW.toLocaleString('en')} jobs`;
const big = `${JOBS.toLocaleString('en')} jobs`;
const bigCache = `${big}, ${BIG_CACHE_MIB} MiB cache`;
const ratio = (a: number, b: number) => Math.round((b / a) * 100) / 100;
const sub = (c: string) => ({
  rps: Math.round(median(submits[c]!.map((x) => x.rps))),
  p50: median(submits[c]!.map((x) => x.p50)),
  p99: median(submits[c]!.map((x) => x.p99)),
});
const [se, sf, sc] = [sub('empty'), sub('full'), sub('fullCache')];
// big/small is the target; the last column shows what the default 16 MiB cache costs against 64 MiB.
const row = (measure: string, e: number, f: number, c: number, target: string) =>
  rows.push({ measure, [small]: e, [big]: f, 'big/small': ratio(e, f), target, [bigCache]: c, '16/64 MiB': ratio(c, f) });
row('submit req/s (median)', se.rps, sf.rps, sc.rps, '≥ 0.8');
row('submit p50 ms', se.p50, sf.p50, sc.p50, '≤ 1.5');
row('submit p99 ms', se.p99, sf.p99, sc.p99, '≤ 1.5');
for (const r of READ_PATHS) {
  const e = summarize(readSamples[r.name]!.empty!);
  const f = summarize(readSamples[r.name]!.full!);
  const c = summarize(readSamples[r.name]!.fullCache!);
  row(`${r.name} p50 ms`, e.p50, f.p50, c.p50, '≤ 1.5');
  row(`${r.name} p99 ms`, e.p99, f.p99, c.p99, '≤ 1.5');
}
printTable(
  `growth: ${small} vs ${big} stored (finished in the last 24 h); submit ${CONNECTIONS} connections, ${SECONDS}s × ${RUNS}; ${READS} sequential reads each`,
  rows,
);
process.stdout.write(
  `gateway start: ${small} ${Math.round(gws.empty.startMs)} ms, ${big} ${Math.round(gws.full.startMs)} ms; database built in ${(full.buildMs / 1000).toFixed(1)} s\n`,
);
process.stdout.write(`results: ${writeResults('growth', { jobs: JOBS, few: FEW, connections: CONNECTIONS, seconds: SECONDS, runs: RUNS, reads: READS, rows, submits, cacheMib: { full: 16, fullCache: BIG_CACHE_MIB }, startMs: { empty: gws.empty.startMs, full: gws.full.startMs, fullCache: gws.fullCache.startMs } })}\n`);
