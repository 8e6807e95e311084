/**
 * Submit throughput and latency over HTTP on loopback: autocannon (in this process) against a
 * compiled gateway (its own process), POST /v1/jobs with a JWT, durability on. Side by side in
 * one run: group commit + FULL sync (the default), FULL sync with one fsync per request (the
 * baseline), and NORMAL sync (WAL without an fsync per commit: not durable on power loss).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { mintToken } from '../src/auth/tokens.js';
import { packageRoot } from '../src/paths.js';
import { median, printTable, writeResults } from './lib.js';

const RUNS = Number(process.env.RUNS ?? 3);
const SECONDS = Number(process.env.SECONDS ?? 5);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 64);
const SECRET = 'bench-secret-bench-secret-bench-secret-0123';

async function startGateway(env: Record<string, string>) {
  const data = mkdtempSync(join(tmpdir(), 'corral-bench-submit-'));
  const port = 20000 + Math.floor(Math.random() * 20000);
  const child = spawn(process.execPath, [join(packageRoot(), 'dist/src/cli/main.js'), 'gateway'], {
    env: { ...process.env, CORRAL_DATA: data, CORRAL_PORT: String(port), CORRAL_JWT_SECRET: SECRET, CORRAL_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) break;
    } catch {
      if (i > 200) throw new Error('gateway did not start');
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const admin = readFileSync(join(data, 'admin.token'), 'utf8').trim();
  const big = 10_000_000;
  await fetch(`${base}/v1/tenants`, {
    method: 'POST',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ id: 'bench', quota: { ratePerMinute: big, maxQueued: big } }),
  });
  const token = await mintToken({ secret: new TextEncoder().encode(SECRET), issuer: 'corral', audience: 'corral', sub: 'bench', tenant: 'bench', scopes: ['jobs:write', 'jobs:read'], ttlSeconds: 3600 });
  return {
    base,
    token,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      rmSync(data, { recursive: true, force: true });
    },
  };
}

async function load(base: string, token: string, seconds: number) {
  const result = await autocannon({
    url: `${base}/v1/jobs`,
    method: 'POST',
    connections: CONNECTIONS,
    duration: seconds,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ command: 'echo hello', timeout: 10 }),
  });
  const ok = result['2xx'];
  return { rps: ok / seconds, p50: result.latency.p50, p99: result.latency.p99, errors: result.non2xx + result.errors, ok };
}

const cases: Array<{ case: string; env: Record<string, string> }> = [
  { case: 'group commit, sync=FULL (default)', env: {} },
  { case: 'one fsync per request, sync=FULL', env: { CORRAL_GROUP_COMMIT: 'false' } },
  { case: 'group commit, sync=NORMAL (not power-safe)', env: { CORRAL_SYNC: 'normal' } },
];

const rows = [];
const raw: Record<string, Array<Awaited<ReturnType<typeof load>>>> = Object.fromEntries(cases.map((c) => [c.case, []]));
// Cases take turns run by run, so drift in the machine's speed falls on all of them alike.
for (let r = 0; r < RUNS; r++) {
  for (const c of cases) {
    const g = await startGateway(c.env);
    await load(g.base, g.token, 1); // warm up JIT and caches
    raw[c.case]!.push(await load(g.base, g.token, SECONDS));
    await g.stop();
  }
}
for (const c of cases) {
  const runs = raw[c.case]!;
  rows.push({
    case: c.case,
    runs: RUNS,
    'median req/s': Math.round(median(runs.map((x) => x.rps))),
    'p50 ms (median)': median(runs.map((x) => x.p50)),
    'p99 ms (median)': median(runs.map((x) => x.p99)),
    'worst p99 ms': Math.max(...runs.map((x) => x.p99)),
    errors: runs.reduce((n, x) => n + x.errors, 0),
  });
}
printTable(`submit: POST /v1/jobs, ${CONNECTIONS} connections, ${SECONDS}s × ${RUNS} runs (target ≥ 10,000/s at p99 ≤ 20 ms)`, rows);
process.stdout.write(`results: ${writeResults('submit', { connections: CONNECTIONS, seconds: SECONDS, rows, raw })}\n`);
