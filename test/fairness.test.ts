import { afterEach, describe, expect, it } from 'vitest';
import { FunctionRequestSchema } from '../src/functions/schema.js';
import { JobRequestSchema } from '../src/jobs/spec.js';
import { fakeAgent, loopbackGateway, until, type FakeAgent, type LoopbackGateway, type RunFrame } from './helpers/fake-agent.js';

/**
 * Fair share under pressure, on a real gateway (HTTP, SQLite, scheduler, the agent hub) with
 * agents that speak the wire protocol from the test: the claims are about dispatch, not
 * containers. Numbers measured here are printed with the test's name.
 */

let lb: LoopbackGateway | undefined;
const agents: FakeAgent[] = [];
afterEach(async () => {
  for (const a of agents.splice(0)) await a.close();
  await lb?.close();
  lb = undefined;
});

const noLimits = { maxConcurrent: 1000, ratePerMinute: null, maxQueued: null, cpuSecondsPerDay: null };

/** Queues `n` jobs for `tenant` through the job service (the path POST /v1/jobs takes after parsing), 500 at a time. */
async function queue(g: LoopbackGateway, tenant: string, n: number, body: Record<string, unknown> = { command: 'true' }): Promise<string[]> {
  const req = JobRequestSchema.parse(body);
  const ids: string[] = [];
  for (let i = 0; i < n; i += 500) {
    const batch = await Promise.all(Array.from({ length: Math.min(500, n - i) }, () => g.gateway.services.jobs.submit(tenant, req)));
    ids.push(...batch.map((b) => b.job.id));
  }
  return ids;
}

function ended(agent: FakeAgent, run: RunFrame, wallMs = 1): void {
  agent.ws.send(JSON.stringify({ type: 'ended', jobId: run.jobId, fence: run.fence, container: `${agent.name}-c`, result: { exitCode: 0, signal: null, reason: 'exit', wallMs, cpuSeconds: 0 } }));
}

describe('fair share under pressure', () => {
  it('tenant A has 5,000 no-ops queued and every slot; tenant B submits one: the very next dispatch is B’s', async () => {
    lb = await loopbackGateway();
    const agent = await fakeAgent(lb.url, lb.agentToken, { name: 'f1', slots: 4 });
    agents.push(agent);
    await lb.tenant('hog', noLimits);
    const polite = await lb.tenant('polite');
    const s = lb.gateway.services;
    await queue(lb, 'hog', 5000);
    await until(() => agent.runs().length === 4);
    expect(s.usage.now('hog', Date.now()).queued).toBe(4996);

    const b = await lb.req('POST', '/v1/jobs', polite, { command: 'true' });
    expect(b.status).toBe(202);
    expect((await lb.req('GET', `/v1/jobs/${b.body.id}`, polite)).body.queuePosition).toBe(1);
    // Every slot is taken: nothing can start until one comes free.
    expect(s.scheduler.runOnce()).toBe(0);

    // From here the test runs the scheduler's passes itself, so "the next pass" is exactly one call.
    s.scheduler.stop();
    const conn = s.hub.agents()[0]!;
    ended(agent, agent.runs()[0]!);
    await until(() => conn.running.size === 3);
    const t0 = performance.now();
    expect(s.scheduler.runOnce()).toBe(1);
    const ms = performance.now() - t0;
    await until(() => agent.runs().length === 5);
    expect(agent.runs()[4]!.jobId).toBe(b.body.id);
    console.log(`B's job went out in the first pass after a slot came free, ahead of 4,995 queued jobs of A; that pass took ${ms.toFixed(2)} ms`);
    // The pass after that goes back to A.
    ended(agent, agent.runs()[1]!);
    await until(() => conn.running.size === 3);
    expect(s.scheduler.runOnce()).toBe(1);
    await until(() => agent.runs().length === 6);
    expect(agent.runs()[5]!.tenant).toBe('hog');
  }, 60_000);

  it('A’s 100 jobs for an image no agent offers do not hold back A’s runnable job nor B’s', async () => {
    lb = await loopbackGateway({ CORRAL_IMAGES: 'busybox,ghost' });
    const agent = await fakeAgent(lb.url, lb.agentToken, { name: 'f1', slots: 2, images: ['busybox'] });
    agents.push(agent);
    const a = await lb.tenant('hog', noLimits);
    const b = await lb.tenant('polite');
    await queue(lb, 'hog', 100, { command: 'true', image: 'ghost' });
    const runnable = await lb.req('POST', '/v1/jobs', a, { command: 'true' });
    expect(runnable.status).toBe(202);
    expect((await agent.nextRun()).jobId).toBe(runnable.body.id);
    const other = await lb.req('POST', '/v1/jobs', b, { command: 'true' });
    expect((await agent.nextRun()).jobId).toBe(other.body.id);
    expect(lb.gateway.services.usage.now('hog', Date.now()).queued).toBe(100);
  });

  it('jobs no free agent has the CPUs or memory for are passed over: the small job runs on the free agent', async () => {
    lb = await loopbackGateway();
    const big = await fakeAgent(lb.url, lb.agentToken, { name: 'big', slots: 1, cpus: 8, memoryBytes: 16 * 1024 ** 3 });
    const small = await fakeAgent(lb.url, lb.agentToken, { name: 'small', slots: 2, cpus: 2, memoryBytes: 2 * 1024 ** 3 });
    agents.push(big, small);
    const a = await lb.tenant('hog', { ...noLimits, maxMemoryBytes: 8 * 1024 ** 3 });
    // The big agent is busy; what only it could take must wait without blocking what the small one can.
    const hold = await lb.req('POST', '/v1/jobs', a, { command: 'sleep 60', memory: '4G' });
    expect((await big.nextRun()).jobId).toBe(hold.body.id);
    await queue(lb, 'hog', 100, { command: 'true', cpuset: '4-5' }); // only big has CPUs 4-5: skipped in the loop
    await queue(lb, 'hog', 100, { command: 'true', memory: '4G' }); // only big has 4G: skipped in SQL
    const runnable = await lb.req('POST', '/v1/jobs', a, { command: 'true', memory: '256M' });
    expect((await small.nextRun()).jobId).toBe(runnable.body.id);
    expect(big.runs()).toHaveLength(1);
  });

  it('a function at its maxConcurrent holds only its own jobs: the tenant’s ad-hoc job runs beside', async () => {
    lb = await loopbackGateway();
    const agent = await fakeAgent(lb.url, lb.agentToken, { name: 'f1', slots: 4 });
    agents.push(agent);
    const a = await lb.tenant('hog', noLimits);
    const s = lb.gateway.services;
    await s.functions.put('hog', 'capped', FunctionRequestSchema.parse({ command: 'true', maxConcurrent: 1 }));
    for (let i = 0; i < 50; i++) await s.functions.invoke('hog', 'capped', { stdin: Buffer.alloc(0), contentType: '', query: '' });
    await until(() => agent.runs().length >= 1);
    const adhoc = await lb.req('POST', '/v1/jobs', a, { command: 'true' });
    await until(() => agent.runs().some((r) => r.jobId === adhoc.body.id));
    // One invocation runs, the ad-hoc job beside it; no second invocation started.
    expect(agent.runs()).toHaveLength(2);
  });
});

describe('reserved concurrency', () => {
  it('a function’s maxConcurrent reserves its slots: a backlog of the tenant’s other jobs cannot take them', async () => {
    lb = await loopbackGateway();
    const agent = await fakeAgent(lb.url, lb.agentToken, { name: 'f1', slots: 8 });
    agents.push(agent);
    await lb.tenant('busy', { ...noLimits, maxConcurrent: 4 });
    const s = lb.gateway.services;
    await s.functions.put('busy', 'api', FunctionRequestSchema.parse({ command: 'true', maxConcurrent: 2 }));
    // 20 ad-hoc jobs first: without the reservation they would take all four of the tenant's slots.
    const adhoc = new Set(await queue(lb, 'busy', 20));
    await until(() => agent.runs().length === 2);
    expect(agent.runs().every((r) => adhoc.has(r.jobId))).toBe(true);
    const calls = [];
    for (let i = 0; i < 2; i++) calls.push((await s.functions.invoke('busy', 'api', { stdin: Buffer.alloc(0), contentType: '', query: '' })).job.id);
    await until(() => agent.runs().length === 4);
    expect(agent.runs().slice(2).map((r) => r.jobId).sort()).toEqual(calls.sort());
    // Reservations must leave the tenant a slot: 2 + 3 of 4 is refused, naming the field.
    await expect(s.functions.put('busy', 'greedy', FunctionRequestSchema.parse({ command: 'true', maxConcurrent: 3 }))).rejects.toMatchObject({ field: 'maxConcurrent' });
  });
});

describe('three tenants saturating six slots for 30 simulated seconds', () => {
  /**
   * Virtual time: each run ends `durationMs(tenant)` after it was dispatched; the test sends the
   * `ended` frames in time order and waits for the gateway's next dispatches before moving on.
   * The gateway's clock is the same virtual clock, so every timestamp it records agrees.
   */
  async function saturate(durationMs: Record<string, number>, seconds = 30) {
    const T0 = Date.now() + 3_600_000; // every job queued below is already due
    let now = 0;
    lb = await loopbackGateway({}, { clock: () => T0 + now });
    const fleet = [
      await fakeAgent(lb.url, lb.agentToken, { name: 'n1', slots: 3 }),
      await fakeAgent(lb.url, lb.agentToken, { name: 'n2', slots: 3 }),
    ];
    agents.push(...fleet);
    const tenants = Object.keys(durationMs);
    // Each tenant could fill every slot by itself.
    for (const t of tenants) {
      await lb.tenant(t, noLimits);
      await queue(lb, t, 1000);
    }
    const seen = new Map<FakeAgent, number>(fleet.map((a) => [a, 0]));
    const running: Array<{ agent: FakeAgent; run: RunFrame; start: number; end: number }> = [];
    const dispatches = new Map(tenants.map((t) => [t, 0]));
    const slotMs = new Map(tenants.map((t) => [t, 0]));
    const horizon = seconds * 1000;
    const take = () => {
      for (const a of fleet) {
        const runs = a.runs();
        for (let i = seen.get(a)!; i < runs.length; i++) {
          const run = runs[i]!;
          running.push({ agent: a, run, start: now, end: now + durationMs[run.tenant]! });
          dispatches.set(run.tenant, dispatches.get(run.tenant)! + 1);
        }
        seen.set(a, runs.length);
      }
    };
    await until(() => fleet.reduce((n, a) => n + a.runs().length, 0) === 6);
    take();
    let ends = 0;
    while (now < horizon) {
      running.sort((x, y) => x.end - y.end);
      now = Math.min(running[0]!.end, horizon);
      if (now === horizon) break;
      const done = running.filter((r) => r.end === now);
      running.splice(0, done.length);
      for (const r of done) {
        slotMs.set(r.run.tenant, slotMs.get(r.run.tenant)! + (r.end - r.start));
        ended(r.agent, r.run, r.end - r.start);
      }
      ends += done.length;
      await until(() => fleet.reduce((n, a) => n + a.runs().length, 0) === 6 + ends, 5000, 1);
      take();
    }
    for (const r of running) slotMs.set(r.run.tenant, slotMs.get(r.run.tenant)! + (horizon - r.start));
    const totalSlot = [...slotMs.values()].reduce((a, b) => a + b, 0);
    const totalDispatch = [...dispatches.values()].reduce((a, b) => a + b, 0);
    return { dispatches, slotShare: new Map(tenants.map((t) => [t, slotMs.get(t)! / totalSlot])), dispatchShare: new Map(tenants.map((t) => [t, dispatches.get(t)! / totalDispatch])), totalDispatch };
  }

  const report = (label: string, r: Awaited<ReturnType<typeof saturate>>) =>
    console.log(
      `${label}: ${r.totalDispatch} dispatches; ` +
        [...r.dispatches.keys()].map((t) => `${t} ${r.dispatches.get(t)} runs, ${(100 * r.slotShare.get(t)!).toFixed(1)} % of slot time`).join('; '),
    );

  it('equal jobs (250 ms each): each tenant gets a third of the dispatches and of the slot time, ± 10 %', async () => {
    const r = await saturate({ a: 250, b: 250, c: 250 });
    report('equal 250 ms jobs', r);
    for (const t of ['a', 'b', 'c']) {
      expect(Math.abs(r.dispatchShare.get(t)! - 1 / 3)).toBeLessThanOrEqual(0.1 / 3);
      expect(Math.abs(r.slotShare.get(t)! - 1 / 3)).toBeLessThanOrEqual(0.1 / 3);
    }
    expect(r.totalDispatch).toBeGreaterThanOrEqual(700);
  }, 120_000);

  it('a tenant with longer jobs gets fewer runs but the same share of the slots, ± 10 %', async () => {
    const r = await saturate({ a: 250, b: 250, long: 1000 });
    report('250/250/1000 ms jobs', r);
    for (const t of ['a', 'b', 'long']) expect(Math.abs(r.slotShare.get(t)! - 1 / 3)).toBeLessThanOrEqual(0.1 / 3);
    expect(r.dispatches.get('long')!).toBeLessThan(r.dispatches.get('a')! / 2);
  }, 120_000);
});
