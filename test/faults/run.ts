/**
 * The fault harness (`npm run test:faults`): one gateway, four agents in network namespaces of
 * their own, real LXC; ≥ 5,000 jobs from three tenants while agents, links, the gateway and its
 * disk fail one after another; then a drain, a stop, and the checker. The last line is
 *
 *   faults: lost=N stuck=N duplicated=N wrong=N leaked=N fenced=N
 *
 * and the exit code is 0 only if every count but `fenced` is 0. Settings (environment):
 * FAULTS_JOBS (5000), FAULTS_RATE (submits/s, 20), FAULTS_AGENTS (4), FAULTS_SEED (the fault
 * order; printed), FAULTS_LEASE_MS (5000), FAULTS_DIR (logs; /tmp/corral-faults-PID).
 */
import { copyFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { printTable } from '../../bench/lib.js';
import { check, countsLine, readDb, rejectedLate, unacknowledged, type Counts, type DbView, type Finding } from './checker.js';
import { startFaultCluster, type FaultCluster } from './cluster.js';
import { DB_FILE } from './datafs.js';
import { runFaults, type FaultRecord } from './faults.js';
import { healTimes } from './heal.js';
import { idmapCollisions } from './idmap.js';
import { findLeaks } from './leaks.js';
import { removeStale } from './stale.js';
import { runWorkload, type Tenant, type WorkloadStats } from './workload.js';

const JOBS = Number(process.env.FAULTS_JOBS ?? 5000);
const RATE = Number(process.env.FAULTS_RATE ?? 20);
const AGENTS = Number(process.env.FAULTS_AGENTS ?? 4);
const LEASE_MS = Number(process.env.FAULTS_LEASE_MS ?? 5000);
const SEED = Number(process.env.FAULTS_SEED ?? Math.floor(Math.random() * 2 ** 31));
const DIR = process.env.FAULTS_DIR ?? `/tmp/corral-faults-${process.pid}`;
/**
 * The whole run must fit CI's 15 minutes: the drain waits for every accepted job to end until
 * this much has passed since the start (stopping, checking and tearing down take the rest), or
 * until nothing has ended for STALL_MS (then what is left is stuck).
 */
const BUDGET_MS = Number(process.env.FAULTS_BUDGET_MS ?? 13 * 60_000);
const STALL_MS = 90_000;
const TENANTS = ['alpha', 'beta', 'gamma'];

const say = (s: string) => process.stdout.write(s + '\n');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Jobs not yet final, through the API (the tenants' usage). Not from the database file: while
 * the gateway runs, another process opening it (even read-only) crashed the gateway with SIGBUS.
 */
async function unfinished(c: FaultCluster): Promise<number> {
  let n = 0;
  for (const id of TENANTS) {
    const res = await c.admin('GET', `/v1/tenants/${id}/usage`);
    if (!res.ok) throw new Error(`usage of ${id}: ${res.status}`);
    const u = (await res.json()) as { now: { queued: number; running: number } };
    n += u.now.queued + u.now.running;
  }
  return n;
}

async function tenants(c: FaultCluster): Promise<Tenant[]> {
  const out: Tenant[] = [];
  for (const id of TENANTS) {
    const res = await c.admin('POST', '/v1/tenants', { id, quota: { maxConcurrent: 4 * AGENTS, ratePerMinute: null, maxQueued: null } });
    if (res.status !== 201) throw new Error(`creating tenant ${id}: ${res.status} ${await res.text()}`);
    out.push({ id, token: c.token(['--tenant', id, '--scope', 'jobs:read jobs:write', '--ttl', '1d']) });
  }
  return out;
}

function report(findings: Finding[]): void {
  for (const count of ['lost', 'stuck', 'duplicated', 'wrong', 'fenced', 'note'] as const) {
    const of = findings.filter((f) => f.count === count);
    if (of.length === 0) continue;
    say(`\n${count} (${of.length}):`);
    for (const f of of.slice(0, 20)) say(`  ${f.jobId} [${f.kind}] ${f.detail}`);
    if (of.length > 20) say(`  … ${of.length - 20} more`);
  }
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) throw new Error('the fault harness needs root (network namespaces, LXC, mounts)');
  const stale = removeStale();
  if (stale.length) say(`removed leftovers of an earlier run: ${stale.join(', ')}`);
  say(`faults: ${JOBS} jobs at ${RATE}/s, ${AGENTS} agents, lease ${LEASE_MS} ms, seed ${SEED}, logs in ${DIR}`);
  const runStart = Date.now();
  const c = await startFaultCluster({ dir: DIR, agents: AGENTS, slots: 4, leaseMs: LEASE_MS, dataBytes: 128 * 2 ** 20 });
  let db: DbView | undefined;
  const stats: WorkloadStats = { accepted: [], unaccepted: [], statuses: new Map() };
  let faults: FaultRecord[] = [];
  const dbFile = join(c.data.dir, DB_FILE);
  try {
    say(`cluster up in ${((Date.now() - runStart) / 1000).toFixed(1)} s: gateway ${c.base}, agents ${c.agents.map((a) => `${a.name}@${a.ns.name}`).join(', ')}`);
    const ts = await tenants(c);
    let submitting = true;
    const t0 = Date.now();
    const work = runWorkload({ base: c.base, tenants: ts, jobs: JOBS, rate: RATE, inflight: 64 }, stats).finally(() => (submitting = false));
    const faulting = sleep(15_000).then(() => runFaults(c, { leaseMs: LEASE_MS, gapMs: Math.max(20_000, LEASE_MS * 4), seed: SEED }, () => !submitting));
    [, faults] = await Promise.all([work, faulting]);
    say(`submitted in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${stats.accepted.length} accepted, ${stats.unaccepted.length} never accepted`);
    const drainStart = Date.now();
    let shown = 0;
    let fewest = Infinity;
    let progressAt = Date.now();
    while (Date.now() - runStart < BUDGET_MS && Date.now() - progressAt < STALL_MS) {
      const left = await unfinished(c).catch(() => -1);
      if (left === 0) break;
      if (left >= 0 && left < fewest) {
        fewest = left;
        progressAt = Date.now();
      }
      if (Date.now() - shown > 15_000) {
        // What the gateway believes of each agent while jobs wait: evidence for a drain that stalls.
        shown = Date.now();
        const agents = await c.admin('GET', '/v1/agents').then((r) => r.json() as Promise<{ agents: Array<{ id: string; freeSlots: number; running: string[] }> }>).catch(() => ({ agents: [] }));
        say(`  draining: ${left} not final; agents ${agents.agents.map((a) => `${a.id} free ${a.freeSlots} running ${a.running.length}`).join(', ')}`);
      }
      await sleep(1000);
    }
    say(`drained in ${((Date.now() - drainStart) / 1000).toFixed(1)} s`);
    await c.stop();
    db = readDb(dbFile);
    // Kept beside the logs for a post-mortem: the data filesystem goes with the teardown.
    for (const f of [DB_FILE, `${DB_FILE}-wal`]) if (existsSync(join(c.data.dir, f))) copyFileSync(join(c.data.dir, f), join(DIR, f));
  } finally {
    await c.teardown();
  }
  const leaks = findLeaks(c.run, DIR);
  // An id range that two tenants share across agents leaks isolation: it counts as a leak too.
  const shared = idmapCollisions(c.agents);
  const onGateway = faults.filter((f) => f.target === 'gateway').map((f) => ({ kind: f.kind, from: f.at, to: f.undoneAt ?? f.at }));
  const { counts, findings } = check(stats.accepted, db, c.frames, rejectedLate(c.gatewayLog), onGateway);
  const all: Counts = { ...counts, leaked: leaks.length + shared.length };

  printTable(
    `fault schedule (seed ${SEED}; lease ${LEASE_MS} ms; seconds from the cluster's start)`,
    healTimes(faults, db, runStart).map((h) => ({
      at: h.at,
      fault: h.fault,
      target: h.target,
      'lasted s': h.lasted,
      caught: h.caught,
      'healed s': h.healed,
      'all caught done s': h.allDone,
      note: h.note,
    })),
  );
  say('  healed: fault → the first caught job completing on a survivor (gateway faults: → the first job placed after it completing)');
  const crashes = c.events.filter((e) => e.detail?.includes('not caused by the harness'));
  for (const e of crashes) say(`process exit the harness did not cause: ${e.proc} at +${((e.at - runStart) / 1000).toFixed(1)} s: ${e.detail}`);
  say(`answers over every try: ${[...stats.statuses].map(([s, n]) => `${s}×${n}`).join(' ')}`);
  const byState = new Map<string, number>();
  for (const a of stats.accepted) {
    const s = db.jobs.get(a.id)?.state ?? 'missing';
    byState.set(s, (byState.get(s) ?? 0) + 1);
  }
  say(`accepted jobs by final state: ${[...byState].map(([s, n]) => `${s}=${n}`).join(' ')}`);
  const orphans = unacknowledged(stats.accepted, db);
  say(`jobs in the database no client got a 2xx for: ${orphans.length} (submits never accepted: ${stats.unaccepted.length})`);
  report(findings);
  if (shared.length) say(`\nleaked: id ranges shared by different tenants across agents on this host (${shared.length}):\n  ${shared.join('\n  ')}`);
  if (leaks.length) say(`\nleaked (${leaks.length}):\n  ${leaks.slice(0, 40).join('\n  ')}`);
  say(countsLine(all));
  return all.lost + all.stuck + all.duplicated + all.wrong + all.leaked === 0 && stats.accepted.length >= JOBS ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`fault harness failed: ${(err as Error).stack ?? err}\n`);
    process.exit(2);
  },
);
