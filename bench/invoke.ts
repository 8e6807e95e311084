/**
 * End-to-end invocation through the all-in-one `corral up` (a compiled child process: gateway +
 * local agent + real LXC containers), measured from an HTTP client on loopback:
 *
 *   warm   — sequential no-op jobs (`/bin/true`), POST /v1/jobs?wait → finished job, warm container
 *   cold   — `fresh: true` with no blank containers kept (--warm 0): a container is made per job
 *   sustained — several clients submitting no-op jobs with ?wait for a fixed time
 *   floors — in the same run: `lxc-attach -n C -- /bin/true` into a running container, a plain
 *            `/bin/true` spawn, the costs a resident executor avoids; and the resident executor
 *            alone (no HTTP, gateway or agent protocol), one at a time and in CLIENTS containers
 *            at once: what running the no-op itself costs, which no platform code can beat.
 */
import { hostSlots, RangeClaims } from '../agent/lxc/idmap.js';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, Pool, setGlobalDispatcher } from 'undici';
import { loadAgentConfig } from '../agent/config.js';
import { ensureExecutor } from '../agent/executor/build.js';
import { Container } from '../agent/pool/container.js';
import { packageRoot } from '../src/paths.js';
import { printTable, summarize, writeResults, type Row } from './lib.js';

setGlobalDispatcher(new Agent({ keepAliveTimeout: 60_000, connections: 64 }));

const WARM_N = Number(process.env.WARM_N ?? 400);
const COLD_N = Number(process.env.COLD_N ?? 40);
const SUSTAIN_SECONDS = Number(process.env.SUSTAIN_SECONDS ?? 10);
const CLIENTS = Number(process.env.CLIENTS ?? 8);
const RUNS = Number(process.env.RUNS ?? 3);

async function up(flags: string[]) {
  const data = mkdtempSync(join(tmpdir(), 'corral-bench-invoke-'));
  const port = 20000 + Math.floor(Math.random() * 20000);
  const child = spawn(process.execPath, [join(packageRoot(), 'dist/src/cli/main.js'), 'up', '--data', data, '--port', String(port), ...flags], {
    env: { ...process.env, CORRAL_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const base = `http://127.0.0.1:${port}`;
  const tokenFile = join(data, 'default.token');
  for (let i = 0; !existsSync(tokenFile); i++) {
    if (i > 600) throw new Error('corral up did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  const token = readFileSync(tokenFile, 'utf8').trim();
  const admin = readFileSync(join(data, 'admin.token'), 'utf8').trim();
  await fetch(`${base}/v1/tenants/default`, {
    method: 'PATCH',
    headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ quota: { maxConcurrent: 1000, ratePerMinute: 10_000_000, maxQueued: 1_000_000 } }),
  });
  return {
    base,
    token,
    admin,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      rmSync(data, { recursive: true, force: true });
    },
  };
}

// The measuring client is undici's request API over a keep-alive pool, not fetch(): on this
// 2-core machine fetch() cost the client ~0.4 ms of CPU per call, which both inflated the
// latencies measured and took CPU from the gateway and agent under sustained load.
const pools = new Map<string, Pool>();
async function invoke(base: string, token: string, body: Record<string, unknown>): Promise<number> {
  let pool = pools.get(base);
  if (!pool) pools.set(base, (pool = new Pool(base, { connections: 64, keepAliveTimeout: 60_000 })));
  const t0 = performance.now();
  const res = await pool.request({ path: '/v1/jobs?wait=30', method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const job = (await res.body.json()) as { state: string };
  const ms = performance.now() - t0;
  if (res.statusCode !== 200 || job.state !== 'succeeded') throw new Error(`job did not succeed: ${res.statusCode} ${JSON.stringify(job).slice(0, 300)}`);
  return ms;
}

async function poolReady(base: string, admin: string, blanks: number) {
  for (let i = 0; i < 400; i++) {
    const r = (await (await fetch(`${base}/v1/agents`, { headers: { authorization: `Bearer ${admin}` } })).json()) as { agents: Array<{ pool: { blank: Record<string, number> } }> };
    if ((r.agents[0]?.pool.blank.busybox ?? 0) >= blanks) return;
    await new Promise((res) => setTimeout(res, 50));
  }
}

const noop = { command: ['/bin/true'] };
const rows: Row[] = [];
const raw: Record<string, unknown> = {};
const row = (name: string, ms: number[], extra: Row = {}) => {
  const s = summarize(ms);
  rows.push({ measure: name, n: s.n, 'p50 ms': s.p50, 'p90 ms': s.p90, 'p99 ms': s.p99, 'max ms': s.max, 'jobs/s': '', ...extra });
};

// Warm and sustained, on a pool with blanks ready.
{
  const warmRuns: number[][] = [];
  const rates: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const c = await up(['--warm', '2', '--slots', '16']);
    await poolReady(c.base, c.admin, 2);
    for (let i = 0; i < 30; i++) await invoke(c.base, c.token, noop); // warm-up: the tenant's container, JIT
    const ms: number[] = [];
    for (let i = 0; i < WARM_N; i++) ms.push(await invoke(c.base, c.token, noop));
    warmRuns.push(ms);
    let done = 0;
    const deadline = performance.now() + SUSTAIN_SECONDS * 1000;
    await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        while (performance.now() < deadline) {
          await invoke(c.base, c.token, noop);
          done++;
        }
      }),
    );
    rates.push(done / SUSTAIN_SECONDS);
    await pools.get(c.base)?.close();
    await c.stop();
  }
  row(`warm no-op, POST ?wait → result (${RUNS} runs pooled)`, warmRuns.flat());
  warmRuns.forEach((ms, i) => row(`  run ${i + 1}`, ms));
  rows.push({ measure: `sustained no-op jobs/s, ${CLIENTS} clients (median of ${RUNS})`, n: rates.length, 'p50 ms': '', 'p90 ms': '', 'p99 ms': '', 'max ms': '', 'jobs/s': Math.round([...rates].sort((a, b) => a - b)[Math.floor(rates.length / 2)]!) });
  raw.warm = warmRuns;
  raw.sustained = rates;
}

// Cold: no blank containers; fresh: true makes a new one per job.
{
  const c = await up(['--warm', '0', '--slots', '16']);
  for (let i = 0; i < 3; i++) await invoke(c.base, c.token, { ...noop, fresh: true });
  const ms: number[] = [];
  for (let i = 0; i < COLD_N; i++) ms.push(await invoke(c.base, c.token, { ...noop, fresh: true }));
  row('cold no-op (new container per job), POST ?wait → result', ms);
  raw.cold = ms;

  // Floors, while this corral's containers run.
  const name = readFileSync('/proc/self/mounts', 'utf8') && spawnSync('lxc-ls', ['-1', '--running'], { encoding: 'utf8' }).stdout.split('\n').find((n) => n.startsWith('corral-run-'));
  if (name) {
    const attach: number[] = [];
    for (let i = 0; i < 100; i++) {
      const t0 = performance.now();
      spawnSync('lxc-attach', ['-n', name, '--', '/bin/true']);
      attach.push(performance.now() - t0);
    }
    row('floor: lxc-attach -n C -- /bin/true', attach);
    raw.lxcAttach = attach;
  }
  await pools.get(c.base)?.close();
  await c.stop();
}
// The executor floor: containers started directly, runs handed to their executors.
{
  const host = loadAgentConfig({ gateway: 'ws://unused', token: 'unused' }, {});
  const env = { agent: `bench${process.pid}`, lxcPath: host.lxcPath, executor: await ensureExecutor(host.stateDir), diskBytes: host.disk };
  // Claimed like an agent claims one, so no agent on this host gives the range to a tenant meanwhile.
  const claims = new RangeClaims(host.idLockDir);
  const range = hostSlots().find((b) => b !== host.idmapBase && claims.claim(b));
  if (range === undefined) throw new Error('no free id range: every range of root is claimed by an agent on this host');
  const containers = await Promise.all(Array.from({ length: CLIENTS }, () => Container.start('busybox', env, range)));
  const once = (c: Container) =>
    new Promise<number>((resolve) => {
      const t0 = performance.now();
      c.exec.once('exit', () => resolve(performance.now() - t0));
      c.exec.run({ argv: ['/bin/true'], env: { PATH: '/bin' }, uid: host.jobUid, gid: host.jobUid, outputBudget: 1024 });
    });
  try {
    for (let i = 0; i < 50; i++) await once(containers[0]!);
    const seq: number[] = [];
    for (let i = 0; i < WARM_N; i++) seq.push(await once(containers[0]!));
    let done = 0;
    const deadline = performance.now() + 3000;
    const t0 = performance.now();
    await Promise.all(containers.map(async (c) => {
      while (performance.now() < deadline) {
        await once(c);
        done++;
      }
    }));
    const perSecond = done / ((performance.now() - t0) / 1000);
    row(`floor: resident executor alone, /bin/true (jobs/s: ${CLIENTS} containers)`, seq, { 'jobs/s': Math.round(perSecond) });
    raw.executor = { seq, parallelPerSecond: perSecond };
  } finally {
    await Promise.all(containers.map((c) => c.destroy()));
    claims.close();
  }
}

const spawnMs: number[] = [];
for (let i = 0; i < 300; i++) {
  const t0 = performance.now();
  spawnSync('/bin/true');
  spawnMs.push(performance.now() - t0);
}
row('floor: spawn /bin/true on the host', spawnMs);
raw.spawn = spawnMs;

printTable('invoke (targets: warm p50 ≤ 3 ms, p99 ≤ 10 ms; cold p50 ≤ 30 ms; ≥ 2,000 jobs/s)', rows);
process.stdout.write(`results: ${writeResults('invoke', { rows, raw })}\n`);
