import { afterEach, describe, expect, it } from 'vitest';
import { fakeAgent, loopbackGateway, until, type FakeAgent, type LoopbackGateway } from './helpers/fake-agent.js';
import { problemOf, testGateway, type TestGateway } from './fixtures.js';

/**
 * Quotas: each one over its limit answers with its own problem type (429 with Retry-After for
 * those that pass with time, 422 naming the per-job maximum), and an admin's PATCH holds from
 * the very next request — for queued jobs too where that makes sense (maxConcurrent, the budget).
 */

let g: TestGateway | undefined;
let lb: LoopbackGateway | undefined;
const agents: FakeAgent[] = [];
afterEach(async () => {
  for (const a of agents.splice(0)) await a.close();
  await lb?.close();
  lb = undefined;
  await g?.close();
  g = undefined;
});

const GiB = 1024 ** 3;
const secondsToUtcMidnight = () => Math.ceil((86_400_000 - (Date.now() % 86_400_000)) / 1000);

async function patch(gw: TestGateway, tenant: string, quota: Record<string, unknown>) {
  const res = await gw.req('PATCH', `/v1/tenants/${tenant}`, { token: gw.admin, body: { quota } });
  expect(res.status).toBe(200);
}

describe('quota answers', () => {
  it('ratePerMinute: 429 /problems/quota/ratePerMinute with a Retry-After within the minute; raised, the next submission passes', async () => {
    g = await testGateway();
    const token = await g.tenant('acme', { ratePerMinute: 2 });
    const submit = () => g!.req('POST', '/v1/jobs', { token, body: { command: 'true' } });
    expect((await submit()).status).toBe(202);
    expect((await submit()).status).toBe(202);
    const over = await submit();
    expect(over.status).toBe(429);
    const retry = Number(over.headers.get('retry-after'));
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    const p = await problemOf(over);
    expect(p.type).toBe('application/problem+json');
    expect(p.body).toMatchObject({ type: '/problems/quota/ratePerMinute', status: 429 });
    expect(p.fields).toEqual(['ratePerMinute']);
    await patch(g, 'acme', { ratePerMinute: null });
    expect((await submit()).status).toBe(202);
  });

  it('maxQueued: 429 /problems/quota/maxQueued with Retry-After; raised, the next submission passes', async () => {
    g = await testGateway();
    const token = await g.tenant('acme', { maxQueued: 1 });
    const submit = () => g!.req('POST', '/v1/jobs', { token, body: { command: 'true' } });
    expect((await submit()).status).toBe(202);
    const over = await submit();
    expect(over.status).toBe(429);
    expect(Number(over.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect((await problemOf(over)).body.type).toBe('/problems/quota/maxQueued');
    await patch(g, 'acme', { maxQueued: 2 });
    expect((await submit()).status).toBe(202);
    expect((await submit()).status).toBe(429);
  });

  it('cpuSecondsPerDay: a running attempt uses it up; 429 /problems/quota/cpuSecondsPerDay retries at the next UTC midnight; raised, the next submission passes', async () => {
    g = await testGateway();
    const token = await g.tenant('acme', { cpuSecondsPerDay: 1000 });
    const submit = () => g!.req('POST', '/v1/jobs', { token, body: { command: 'sleep 600', cpu: 2 } });
    const first = await (await submit()).json();
    const c = g.s.machine.claim(first.id, 'agent-1')!;
    g.s.machine.start(first.id, c.fence, 'c-1', Date.now() - 30_000); // 2 CPUs × 30 s = 60 CPU-seconds so far
    expect((await submit()).status).toBe(202);
    await patch(g, 'acme', { cpuSecondsPerDay: 50 });
    const over = await submit();
    expect(over.status).toBe(429);
    const retry = Number(over.headers.get('retry-after'));
    expect(Math.abs(retry - secondsToUtcMidnight())).toBeLessThanOrEqual(2);
    expect((await problemOf(over)).body).toMatchObject({ type: '/problems/quota/cpuSecondsPerDay', status: 429 });
    await patch(g, 'acme', { cpuSecondsPerDay: 100 });
    expect((await submit()).status).toBe(202);
  });

  it('per-job maxima: 422 /problems/limit/<limit> naming the field; raised, the same job is accepted on the next request', async () => {
    g = await testGateway();
    const token = await g.tenant('acme', { maxMemoryBytes: 512 * 1024 ** 2, maxTimeoutSeconds: 60, maxCpu: 1 });
    const cases = [
      { body: { command: 'true', memory: '1G' }, limit: 'maxMemoryBytes', field: 'memory', raise: { maxMemoryBytes: GiB } },
      { body: { command: 'true', timeout: 120 }, limit: 'maxTimeoutSeconds', field: 'timeout', raise: { maxTimeoutSeconds: 120 } },
      { body: { command: 'true', cpu: 2 }, limit: 'maxCpu', field: 'cpu', raise: { maxCpu: 2 } },
      { body: { command: 'true', cpuset: '0-2' }, limit: 'maxCpu', field: 'cpuset', raise: { maxCpu: 3 } },
    ];
    for (const c of cases) {
      const res = await g.req('POST', '/v1/jobs', { token, body: c.body });
      expect(res.status, c.limit).toBe(422);
      const p = await problemOf(res);
      expect(p.body.type).toBe(`/problems/limit/${c.limit}`);
      expect(p.fields).toEqual([c.field]);
      await patch(g, 'acme', c.raise);
      expect((await g.req('POST', '/v1/jobs', { token, body: c.body })).status, c.limit).toBe(202);
    }
  });

  it('two PATCHes of different fields at once both hold', async () => {
    g = await testGateway();
    await g.tenant('acme');
    const [a, b] = await Promise.all([
      g.req('PATCH', '/v1/tenants/acme', { token: g.admin, body: { quota: { maxQueued: 7 } } }),
      g.req('PATCH', '/v1/tenants/acme', { token: g.admin, body: { quota: { ratePerMinute: 9 } } }),
    ]);
    expect([a.status, b.status]).toEqual([200, 200]);
    expect((await (await g.req('GET', '/v1/tenants/acme', { token: g.admin })).json()).quota).toMatchObject({ maxQueued: 7, ratePerMinute: 9 });
    expect(g.s.tenants.quota('acme')).toMatchObject({ maxQueued: 7, ratePerMinute: 9 });
  });

  it('maxOutputBytes patched holds for the next job submitted', async () => {
    g = await testGateway();
    const token = await g.tenant('acme', { maxOutputBytes: 4096 });
    const before = await (await g.req('POST', '/v1/jobs', { token, body: { command: 'true' } })).json();
    await patch(g, 'acme', { maxOutputBytes: 1024 });
    const after = await (await g.req('POST', '/v1/jobs', { token, body: { command: 'true' } })).json();
    expect(g.s.jobs.row('acme', before.id).spec.maxOutputBytes).toBe(4096);
    expect(g.s.jobs.row('acme', after.id).spec.maxOutputBytes).toBe(1024);
  });
});

describe('quotas and queued jobs', () => {
  it('maxConcurrent raised lets already-queued jobs start at the next pass; lowered, no new job starts past it', async () => {
    lb = await loopbackGateway();
    const agent = await fakeAgent(lb.url, lb.agentToken, { name: 'f1', slots: 8 });
    agents.push(agent);
    const token = await lb.tenant('acme', { maxConcurrent: 1 });
    for (let i = 0; i < 6; i++) expect((await lb.req('POST', '/v1/jobs', token, { command: 'sleep 60' })).status).toBe(202);
    await until(() => agent.runs().length === 1);
    const s = lb.gateway.services;
    expect(s.scheduler.runOnce()).toBe(0);
    const admin = await (await import('../src/auth/tokens.js')).mintToken({ secret: s.secret, issuer: 'corral', audience: 'corral', sub: 'admin', scopes: ['admin'], ttlSeconds: 600 });
    expect((await lb.req('PATCH', '/v1/tenants/acme', admin, { quota: { maxConcurrent: 3 } })).status).toBe(200);
    expect(s.scheduler.runOnce()).toBe(2);
    await until(() => agent.runs().length === 3);
    expect((await lb.req('PATCH', '/v1/tenants/acme', admin, { quota: { maxConcurrent: 1 } })).status).toBe(200);
    agent.succeed(agent.runs()[0]!);
    agent.succeed(agent.runs()[1]!);
    await until(() => s.usage.now('acme', Date.now()).running === 1);
    expect(s.scheduler.runOnce()).toBe(0);
    expect(agent.runs()).toHaveLength(3);
  });

  it('a tenant past its daily CPU budget gets no more of its queued jobs started; an admin raising it starts them at the next pass', async () => {
    lb = await loopbackGateway();
    const agent = await fakeAgent(lb.url, lb.agentToken, { name: 'f1', slots: 4 });
    agents.push(agent);
    const token = await lb.tenant('acme', { maxConcurrent: 1, cpuSecondsPerDay: 5 });
    const first = await lb.req('POST', '/v1/jobs', token, { command: 'burn' });
    const second = await lb.req('POST', '/v1/jobs', token, { command: 'true' });
    expect(second.status).toBe(202);
    const run = await agent.nextRun();
    expect(run.jobId).toBe(first.body.id);
    agent.ws.send(JSON.stringify({ type: 'ended', jobId: run.jobId, fence: run.fence, container: 'f1-c', result: { exitCode: 0, signal: null, reason: 'exit', wallMs: 3000, cpuSeconds: 6 } }));
    const s = lb.gateway.services;
    await until(() => s.usage.now('acme', Date.now()).running === 0);
    expect(s.scheduler.runOnce()).toBe(0);
    const u = (await lb.req('GET', '/v1/usage', token)).body;
    expect(u.budget).toEqual({ cpuSecondsPerDay: 5, usedToday: 6, leftToday: 0 });
    expect(u.now.queued).toBe(1);
    expect(agent.runs()).toHaveLength(1);
    const admin = await (await import('../src/auth/tokens.js')).mintToken({ secret: s.secret, issuer: 'corral', audience: 'corral', sub: 'admin', scopes: ['admin'], ttlSeconds: 600 });
    expect((await lb.req('PATCH', '/v1/tenants/acme', admin, { quota: { cpuSecondsPerDay: 100 } })).status).toBe(200);
    expect(s.scheduler.runOnce()).toBe(1);
    expect((await agent.nextRun()).jobId).toBe(second.body.id);
  });
});
