/**
 * The fault run's workload: jobs whose scripts fix their own expected end, submitted by several
 * tenants with an Idempotency-Key each (a submit the gateway may or may not have taken — it died
 * mid-answer, the disk was full — is sent again with the same key until it gets a 2xx), and
 * cancels sent while jobs are queued and while they run.
 */

export const KINDS = ['noop', 'sleep', 'fail', 'flaky', 'timeout', 'cancel_queued', 'cancel_running'] as const;
export type Kind = (typeof KINDS)[number];

/** What each kind of job is asked to do, how often it appears in the mix, and how it must end. */
export const SPECS: Record<Kind, { weight: number; body: Record<string, unknown>; expect: { state: string; exitCode?: number; stdout?: string; exitAttempts?: number } }> = {
  noop: { weight: 62, body: { command: 'echo ok', timeout: 20 }, expect: { state: 'succeeded', exitCode: 0, stdout: 'ok\n' } },
  sleep: { weight: 14, body: { command: 'sleep 0.3; echo ok', timeout: 20 }, expect: { state: 'succeeded', exitCode: 0, stdout: 'ok\n' } },
  // Three attempts that exit 3, no more and no fewer: the retry rules at work.
  fail: { weight: 8, body: { command: 'echo try; exit 3', retries: 2, timeout: 20 }, expect: { state: 'failed', exitCode: 3, exitAttempts: 3 } },
  // Fails its first attempt only: succeeded by its retry (or by the second attempt a platform loss gave it).
  flaky: { weight: 6, body: { command: '[ "$CORRAL_ATTEMPT" -ge 2 ] || exit 4; echo ok', retries: 1, timeout: 20 }, expect: { state: 'succeeded', exitCode: 0, stdout: 'ok\n' } },
  timeout: { weight: 4, body: { command: 'sleep 30', timeout: 1 }, expect: { state: 'timed_out' } },
  // Long enough that only a cancel ends them cancelled: one the gateway dropped shows as `succeeded` after 30 s.
  cancel_queued: { weight: 3, body: { command: 'sleep 30; echo ok', timeout: 60 }, expect: { state: 'cancelled' } },
  cancel_running: { weight: 3, body: { command: 'sleep 30; echo ok', timeout: 60 }, expect: { state: 'cancelled' } },
};

export interface Accepted {
  id: string;
  tenant: string;
  kind: Kind;
  key: string;
  /** When the 2xx came (ms). */
  at: number;
  /** How many times the submit was sent before it got its 2xx. */
  tries: number;
  /** For cancel kinds: whether a cancel got a 2xx. */
  cancelled?: boolean;
  /** For cancel kinds: the state the cancel answered (`cancelled` if it was still queued). */
  cancelAnswer?: string;
}

export interface WorkloadStats {
  accepted: Accepted[];
  /** Submits that never got a 2xx within the retry budget (not the gateway's: they were never accepted). */
  unaccepted: Array<{ kind: Kind; key: string; last: string }>;
  /** Answers by status over every try (5xx and network errors included). */
  statuses: Map<string, number>;
}

export interface Tenant {
  id: string;
  token: string;
}

/** A deterministic mix: job i's kind follows from i, so two runs of the same size submit the same jobs. */
export function kindOf(i: number): Kind {
  const total = KINDS.reduce((n, k) => n + SPECS[k].weight, 0);
  // A stride coprime to the total spreads every kind over the whole run.
  let slot = (i * 37) % total;
  for (const k of KINDS) {
    if (slot < SPECS[k].weight) return k;
    slot -= SPECS[k].weight;
  }
  return 'noop';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A request that is retried on network errors, 429 and 5xx until `budgetMs` passes. */
async function persist(
  stats: WorkloadStats,
  send: () => Promise<Response>,
  budgetMs: number,
): Promise<{ res?: Response; body?: unknown; tries: number; last: string }> {
  const deadline = Date.now() + budgetMs;
  let tries = 0;
  let last = '';
  for (let delay = 100; ; delay = Math.min(2000, delay * 2)) {
    tries++;
    try {
      const res = await send();
      last = String(res.status);
      stats.statuses.set(last, (stats.statuses.get(last) ?? 0) + 1);
      if (res.status < 300) return { res, body: await res.json(), tries, last };
      await res.arrayBuffer().catch(() => undefined);
      if (res.status !== 429 && res.status < 500) return { tries, last };
    } catch (err) {
      last = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
      stats.statuses.set('network error', (stats.statuses.get('network error') ?? 0) + 1);
    }
    if (Date.now() > deadline) return { tries, last };
    await sleep(delay);
  }
}

export interface WorkloadOptions {
  base: string;
  tenants: Tenant[];
  jobs: number;
  /** Submits per second, all tenants together. */
  rate: number;
  /** Most submits in flight at once. */
  inflight: number;
  /** Stops early (the soak stops on its clock). */
  stop?: () => boolean;
  /** Called with each accepted job and how long its accepting request took (ms). */
  onAccepted?: (a: Accepted, ms: number) => void;
}

/** Submits `jobs` jobs at `rate` per second, then waits for every submit and cancel to settle. */
export async function runWorkload(o: WorkloadOptions, stats: WorkloadStats): Promise<void> {
  const pending = new Set<Promise<void>>();
  const t0 = Date.now();
  const runId = `${process.pid}-${t0}`;
  for (let i = 0; i < o.jobs && !o.stop?.(); i++) {
    const due = t0 + (i * 1000) / o.rate;
    if (due > Date.now()) await sleep(due - Date.now());
    while (pending.size >= o.inflight) await Promise.race(pending);
    const p = submitOne(o, stats, i, `${runId}-${i}`).finally(() => pending.delete(p));
    pending.add(p);
  }
  await Promise.all(pending);
}

async function submitOne(o: WorkloadOptions, stats: WorkloadStats, i: number, key: string): Promise<void> {
  const kind = kindOf(i);
  const tenant = o.tenants[i % o.tenants.length]!;
  const headers = { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json', 'idempotency-key': key };
  const body = JSON.stringify(SPECS[kind].body);
  const started = performance.now();
  const r = await persist(stats, () => fetch(`${o.base}/v1/jobs`, { method: 'POST', headers, body }), 90_000);
  if (!r.res) {
    stats.unaccepted.push({ kind, key, last: r.last });
    return;
  }
  const job = r.body as { id: string };
  const a: Accepted = { id: job.id, tenant: tenant.id, kind, key, at: Date.now(), tries: r.tries };
  stats.accepted.push(a);
  o.onAccepted?.(a, performance.now() - started);
  if (kind !== 'cancel_queued' && kind !== 'cancel_running') return;
  const get = () => fetch(`${o.base}/v1/jobs/${job.id}`, { headers });
  if (kind === 'cancel_running') {
    // Until it runs (or 20 s: then it is cancelled wherever it is).
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const s = await persist(stats, get, 10_000);
      if ((s.body as { state?: string } | undefined)?.state === 'running') break;
      await sleep(200);
    }
  }
  const c = await persist(stats, () => fetch(`${o.base}/v1/jobs/${job.id}/cancel`, { method: 'POST', headers }), 90_000);
  a.cancelled = c.res !== undefined;
  a.cancelAnswer = (c.body as { state?: string } | undefined)?.state;
}
