import { afterEach, describe, expect, it } from 'vitest';
import { newJobId } from '../src/ids.js';
import type { AttemptResult } from '../src/queue/states.js';
import { testGateway, type TestGateway } from './fixtures.js';

/**
 * Usage metering: usage_daily is rolled up in the transaction of each attempt's end, and must
 * agree with what the attempts themselves recorded — across retries, failures, a lease lost, a
 * UTC midnight, and jobs that ended without running.
 */

const DAY = 86_400_000;
const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

let g: TestGateway | undefined;
afterEach(async () => {
  await g?.close();
  g = undefined;
});

/** A gateway whose clock the test sets (`clock.now`); the scheduler is not started: attempts are driven through the job machine. */
async function gateway(start: number) {
  const clock = { now: start };
  g = await testGateway({}, { clock: () => clock.now, backoffBaseMs: 0 });
  return { g, clock };
}

function enqueue(gw: TestGateway, now: number, o: { memory: number; cpu?: number; retries?: number }): string {
  const id = newJobId(now);
  const spec = { command: 'x', image: 'busybox', timeout: 60, retries: o.retries ?? 0, env: {}, fresh: false, network: false, memory: o.memory, cpu: o.cpu ?? 1 };
  gw.s.machine.enqueue({ id, tenant: 'acme', name: null, image: 'busybox', spec: JSON.stringify(spec), retries: spec.retries, createdAt: now });
  return id;
}

/** One attempt that runs `wallMs` on the test clock and ends with `result`; returns the job's state after it. */
function attempt(gw: TestGateway, clock: { now: number }, id: string, wallMs: number, result: Omit<AttemptResult, 'wallMs'>) {
  const c = gw.s.machine.claim(id, 'agent-1')!;
  expect(c).toBeDefined();
  gw.s.machine.start(id, c.fence, 'c-1', clock.now);
  clock.now += wallMs;
  return gw.s.machine.finish(id, c.fence, { ...result, wallMs });
}

const exit = (code: number, cpuSeconds: number, peakMemoryBytes: number): Omit<AttemptResult, 'wallMs'> => ({ exitCode: code, signal: null, reason: 'exit', cpuSeconds, peakMemoryBytes });

describe('usage metering', () => {
  it('usage_daily agrees with the attempts it rolls up, per UTC day: retries, failures by reason, a lost lease, jobs that never ran', async () => {
    const midnight = Math.floor(Date.now() / DAY) * DAY;
    const { g, clock } = await gateway(midnight - 60_000); // yesterday, 23:59:00 UTC
    await g.tenant('acme');
    const m = g.s.machine;

    const ok = enqueue(g, clock.now, { memory: 512 * MiB });
    expect(attempt(g, clock, ok, 2000, exit(0, 1.5, 100 * MiB))).toBe('succeeded');

    // Three attempts: a failing exit, a timeout, an OOM that crosses midnight (charged to the day it ended).
    const flaky = enqueue(g, clock.now, { memory: GiB, retries: 2 });
    expect(attempt(g, clock, flaky, 500, exit(1, 0.25, 50 * MiB))).toBe('queued');
    expect(attempt(g, clock, flaky, 3000, { exitCode: null, signal: 'SIGKILL', reason: 'timeout', cpuSeconds: 3, peakMemoryBytes: 200 * MiB })).toBe('queued');
    expect(attempt(g, clock, flaky, 60_000, { exitCode: null, signal: 'SIGKILL', reason: 'oom', cpuSeconds: 7, peakMemoryBytes: GiB })).toBe('failed');

    // A lease that runs out (the agent went silent): the attempt ends agent_error, unmeasured; the job runs again.
    const lost = enqueue(g, clock.now, { memory: 256 * MiB });
    const c = m.claim(lost, 'agent-2')!;
    m.start(lost, c.fence, 'c-2', clock.now);
    clock.now += m.leaseMs + 1;
    expect(m.reapExpired()).toBe(1);
    expect(attempt(g, clock, lost, 1000, exit(0, 0.5, 10 * MiB))).toBe('succeeded');

    // Jobs that end without an attempt count as jobs, with their reason.
    const cancelled = enqueue(g, clock.now, { memory: 256 * MiB });
    expect(m.cancel(cancelled)).toBe('cancelled');
    const unplaceable = enqueue(g, clock.now, { memory: 256 * MiB });
    expect(m.reject(unplaceable, 'unplaceable', 'no agent')).toBe('acme');

    const db = g.s.store.sqlite;
    const fromAttempts = db
      .prepare(
        `SELECT strftime('%Y-%m-%d', a.ended_at / 1000, 'unixepoch') AS day, count(*) AS attempts,
                round(sum(coalesce(a.cpu_seconds, 0)), 6) AS cpu, round(sum(a.wall_seconds), 6) AS wall,
                round(sum(json_extract(j.spec, '$.memory') / ${GiB}.0 * a.wall_seconds), 6) AS gb, max(coalesce(a.peak_memory_bytes, 0)) AS peak,
                sum(a.wall_seconds IS NULL) AS unwritten
         FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE a.tenant = 'acme' GROUP BY day ORDER BY day`,
      )
      .all();
    const fromJobs = db
      .prepare(
        `SELECT strftime('%Y-%m-%d', ended_at / 1000, 'unixepoch') AS day, count(*) AS jobs,
                json_group_object(reason, n) AS failures
         FROM (SELECT ended_at, CASE WHEN state = 'succeeded' THEN NULL ELSE reason END AS reason, count(*) OVER (PARTITION BY strftime('%Y-%m-%d', ended_at / 1000, 'unixepoch'), CASE WHEN state = 'succeeded' THEN NULL ELSE reason END) AS n
               FROM jobs WHERE tenant = 'acme' AND ended_at IS NOT NULL)
         GROUP BY day ORDER BY day`,
      )
      .all() as Array<{ day: string; jobs: number; failures: string }>;
    const daily = db
      .prepare(
        `SELECT day, attempts, round(cpu_seconds, 6) AS cpu, round(wall_seconds, 6) AS wall, round(gb_seconds, 6) AS gb, peak_memory_bytes AS peak, jobs, failures
         FROM usage_daily WHERE tenant = 'acme' ORDER BY day`,
      )
      .all() as Array<Record<string, unknown>>;

    expect(daily.map((d) => d.day)).toEqual([new Date(midnight - DAY).toISOString().slice(0, 10), new Date(midnight).toISOString().slice(0, 10)]);
    expect(daily.map(({ day, attempts, cpu, wall, gb, peak }) => ({ day, attempts, cpu, wall, gb, peak, unwritten: 0 }))).toEqual(fromAttempts);
    expect(daily.map(({ day, jobs }) => ({ day, jobs }))).toEqual(fromJobs.map(({ day, jobs }) => ({ day, jobs })));
    const failuresOf = (f: string) => Object.fromEntries(Object.entries(JSON.parse(f) as Record<string, number>).filter(([k]) => k !== 'null'));
    expect(daily.map((d) => JSON.parse(d.failures as string))).toEqual(fromJobs.map((j) => failuresOf(j.failures)));

    // The numbers themselves, for a reader: yesterday one job (1.5 CPU-s, 2 s × 0.5 GB) and two attempts of another.
    expect(daily[0]).toMatchObject({ attempts: 3, cpu: 4.75, wall: 5.5, gb: 4.5, peak: 200 * MiB, jobs: 1 });
    expect(JSON.parse(daily[1]!.failures as string)).toEqual({ oom: 1, cancelled: 1, unplaceable: 1 });
    expect(daily[1]).toMatchObject({ attempts: 3, jobs: 4, peak: GiB });

    // The tenant's own view shows the same days, today first, 30 of them.
    const u = await (await g.req('GET', '/v1/usage', { token: await g.token({ tenant: 'acme', scopes: ['jobs:read'] }) })).json();
    expect(u.days).toHaveLength(30);
    expect(u.days[0]).toMatchObject({ day: daily[1]!.day, jobs: 4, attempts: 3, failures: { oom: 1, cancelled: 1, unplaceable: 1 } });
    expect(u.days[1]).toMatchObject({ day: daily[0]!.day, jobs: 1, attempts: 3, cpuSeconds: 4.75, wallSeconds: 5.5, gbSeconds: 4.5, peakMemoryBytes: 200 * MiB, failures: {} });
    expect(u.days[29]).toMatchObject({ jobs: 0, attempts: 0, cpuSeconds: 0 });
  });

  it('counts each job once in the UTC hour it ended, and reports the last 48 hours newest first with zeros filled', async () => {
    const HOUR = 3_600_000;
    const top = Math.floor(Date.now() / HOUR) * HOUR; // the start of this UTC hour
    const { g, clock } = await gateway(top - 50 * HOUR + 600_000);
    const token = await g.tenant('acme');
    const m = g.s.machine;

    // Fifty hours ago: outside the report's window, but kept in the table.
    expect(attempt(g, clock, enqueue(g, clock.now, { memory: 64 * MiB }), 1000, exit(0, 0.1, MiB))).toBe('succeeded');

    clock.now = top - 10_000; // 23:59:50 of the previous hour, say
    expect(attempt(g, clock, enqueue(g, clock.now, { memory: 64 * MiB }), 2000, exit(0, 0.1, MiB))).toBe('succeeded');
    // A retried job counts once, in the hour of its last attempt's end; a failed attempt that
    // goes back to the queue counts for nothing here.
    const flaky = enqueue(g, clock.now, { memory: 64 * MiB, retries: 1 });
    expect(attempt(g, clock, flaky, 3000, exit(1, 0.1, MiB))).toBe('queued');
    expect(attempt(g, clock, flaky, 10_000, exit(2, 0.1, MiB))).toBe('failed');
    expect(m.cancel(enqueue(g, clock.now, { memory: 64 * MiB }))).toBe('cancelled');
    expect(clock.now).toBeGreaterThan(top);

    const db = g.s.store.sqlite;
    const fromJobs = db
      .prepare(
        `SELECT strftime('%Y-%m-%dT%H', ended_at / 1000, 'unixepoch') AS hour, count(*) AS jobs, sum(state <> 'succeeded') AS failures
         FROM jobs WHERE tenant = 'acme' AND ended_at IS NOT NULL GROUP BY hour ORDER BY hour`,
      )
      .all();
    expect(db.prepare(`SELECT hour, jobs, failures FROM usage_hourly WHERE tenant = 'acme' ORDER BY hour`).all()).toEqual(fromJobs);
    expect(fromJobs).toHaveLength(3);

    const u = await (await g.req('GET', '/v1/usage', { token })).json();
    const hourOf = (ms: number) => new Date(ms).toISOString().slice(0, 13);
    expect(u.hours).toHaveLength(48);
    expect(u.hours.map((h: { hour: string }) => h.hour)).toEqual(Array.from({ length: 48 }, (_, i) => hourOf(top - i * HOUR)));
    expect(u.hours[0]).toEqual({ hour: hourOf(top), jobs: 2, failures: 2 });
    expect(u.hours[1]).toEqual({ hour: hourOf(top - HOUR), jobs: 1, failures: 0 });
    expect(u.hours.slice(2).every((h: { jobs: number; failures: number }) => h.jobs === 0 && h.failures === 0)).toBe(true);
    const byAdmin = await (await g.req('GET', '/v1/tenants/acme/usage', { token: g.admin })).json();
    expect(byAdmin.hours).toEqual(u.hours);
  });

  it('the budget counts a running attempt at its CPU limit × time run, and a job deleted while running is still charged', async () => {
    const { g, clock } = await gateway(Date.now() + 1000); // jobs submitted now are due on this clock
    const token = await g.tenant('acme', { cpuSecondsPerDay: 100 });
    const job = await (await g.req('POST', '/v1/jobs', { token, body: { command: 'sleep 60', cpu: 1.5 } })).json();
    const c = g.s.machine.claim(job.id, 'agent-1')!;
    g.s.machine.start(job.id, c.fence, 'c-1', clock.now - 10_000); // it has run 10 s
    const u = await (await g.req('GET', '/v1/usage', { token })).json();
    expect(u.now).toMatchObject({ queued: 0, running: 1 });
    expect(u.budget.cpuSecondsPerDay).toBe(100);
    expect(u.budget.usedToday).toBeCloseTo(15, 0);
    expect(u.budget.leftToday).toBeCloseTo(85, 0);
    expect(u.days[0].cpuSeconds).toBe(0); // nothing has ended yet

    // Deleting it does not take its CPU off the bill: it is charged what it could have used.
    expect((await g.req('DELETE', `/v1/jobs/${job.id}`, { token })).status).toBe(204);
    const after = await (await g.req('GET', '/v1/usage', { token })).json();
    expect(after.days[0].attempts).toBe(1);
    expect(after.days[0].cpuSeconds).toBeCloseTo(15, 0);
    expect(after.budget.usedToday).toBeCloseTo(15, 0);
  });

  it('a queued job shows its place in its tenant’s queue, in the job and in the list; running jobs and other tenants do not count', async () => {
    const { g } = await gateway(Date.now() + 60_000);
    const token = await g.tenant('acme');
    const other = await g.tenant('other');
    await g.req('POST', '/v1/jobs', { token: other, body: { command: 'true' } });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await (await g.req('POST', '/v1/jobs', { token, body: { command: 'true' } })).json()).id);
    const position = async (id: string) => (await (await g.req('GET', `/v1/jobs/${id}`, { token })).json()).queuePosition;
    expect(await Promise.all(ids.map(position))).toEqual([1, 2, 3]);
    g.s.machine.claim(ids[0]!, 'agent-1');
    expect(await Promise.all(ids.map(position))).toEqual([undefined, 1, 2]);
    const list = await (await g.req('GET', '/v1/jobs', { token })).json();
    expect(list.jobs.map((j: { id: string; queuePosition?: number }) => [j.id, j.queuePosition])).toEqual([
      [ids[2], 2],
      [ids[1], 1],
      [ids[0], undefined],
    ]);
  });

  it('admins read any tenant’s usage and all tenants’ at once; tenants read only their own', async () => {
    const { g } = await gateway(Date.now());
    const acme = await g.tenant('acme', { cpuSecondsPerDay: 500 });
    await g.tenant('beta');
    await g.req('POST', '/v1/jobs', { token: acme, body: { command: 'true' } });
    const own = await (await g.req('GET', '/v1/usage', { token: acme })).json();
    const byAdmin = await g.req('GET', '/v1/tenants/acme/usage', { token: g.admin });
    expect(byAdmin.status).toBe(200);
    const adminView = await byAdmin.json();
    expect({ ...adminView, now: { ...adminView.now, oldestQueuedAgeSeconds: 0 } }).toEqual({ ...own, now: { ...own.now, oldestQueuedAgeSeconds: 0 } });
    expect(own).toMatchObject({ tenant: 'acme', now: { queued: 1, running: 0 }, budget: { cpuSecondsPerDay: 500, usedToday: 0, leftToday: 500 } });

    const all = await (await g.req('GET', '/v1/usage/all', { token: g.admin })).json();
    expect(all.tenants.map((t: { tenant: string }) => t.tenant)).toEqual(['acme', 'beta']);
    expect(all.tenants[0]).toMatchObject({ now: { queued: 1 }, budget: { leftToday: 500 } });
    expect(all.tenants[1]).toMatchObject({ now: { queued: 0 }, today: { jobs: 0 } });

    expect((await g.req('GET', '/v1/usage/all', { token: acme })).status).toBe(403);
    expect((await g.req('GET', '/v1/tenants/beta/usage', { token: acme })).status).toBe(403);
    expect((await g.req('GET', '/v1/tenants/nobody/usage', { token: g.admin })).status).toBe(404);
    expect((await g.req('GET', '/v1/usage', { token: g.admin })).status).toBe(403);
    expect((await g.req('GET', '/v1/usage')).status).toBe(401);

    const doc = await (await g.req('GET', '/openapi.json')).json();
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/v1/usage', '/v1/usage/all', '/v1/tenants/{id}/usage']));
    expect(doc.components.schemas.Job.properties).toHaveProperty('queuePosition');
  });

  it('/metrics labels at most 20 tenants and sums the rest as tenant="other"', async () => {
    const { g, clock } = await gateway(Date.now() + 60_000);
    const tokens: string[] = [];
    for (let i = 0; i < 25; i++) tokens.push(await g.tenant(`t${String(i).padStart(2, '0')}`));
    for (const token of tokens) await g.req('POST', '/v1/jobs', { token, body: { command: 'true' } });
    // The last tenant has used CPU today: it ranks first, though its name sorts last.
    const t24 = (await (await g.req('GET', '/v1/jobs', { token: tokens[24] })).json()).jobs[0].id;
    const c = g.s.machine.claim(t24, 'agent-1')!;
    g.s.machine.start(t24, c.fence, 'c', clock.now);
    g.s.machine.finish(t24, c.fence, { exitCode: 0, signal: null, reason: 'exit', cpuSeconds: 9, wallMs: 1000 });
    const text = await (await g.req('GET', '/metrics', { token: g.admin })).text();
    const series = (name: string) => [...text.matchAll(new RegExp(`^${name}\\{tenant="([^"]+)"\\} (\\S+)$`, 'gm'))].map((x) => [x[1]!, Number(x[2])] as const);
    const depth = series('corral_queue_depth');
    expect(depth).toHaveLength(21);
    expect(new Map(depth).get('other')).toBe(5);
    expect(depth.reduce((n, [, v]) => n + v, 0)).toBe(24);
    expect(new Map(series('corral_tenant_cpu_seconds_today')).get('t24')).toBe(9);
    expect(new Set(series('corral_tenant_running').map(([t]) => t))).toEqual(new Set(depth.map(([t]) => t)));
  });
});
