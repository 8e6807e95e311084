import { afterEach, describe, expect, it } from 'vitest';
import { fakeAgent, loopbackGateway, until, type FakeAgent, type LoopbackGateway } from '../helpers/fake-agent.js';

/** Placement respects memory: an agent is never promised more memory limits than it has, less the reserve. */

let lb: LoopbackGateway | undefined;
const agents: FakeAgent[] = [];
afterEach(async () => {
  for (const a of agents.splice(0)) await a.close();
  await lb?.close();
  lb = undefined;
});

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** One more scheduler pass, run now: it must place nothing more. */
const nothingMorePlaced = () => expect(lb!.gateway.services.scheduler.runOnce()).toBe(0);

describe('placement respects memory', () => {
  it('a 1 GiB agent with the default 256M reserve runs three 256M jobs at once, not four, though it has eight slots', async () => {
    lb = await loopbackGateway();
    const agent = await fakeAgent(lb.url, lb.agentToken, { name: 'small', memoryBytes: GiB, slots: 8 });
    agents.push(agent);
    const token = await lb.tenant('acme', { maxConcurrent: 10 });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await lb.req('POST', '/v1/jobs', token, { command: 'sleep 1', memory: '256M' })).body.id);
    await until(() => agent.runs().length === 3);
    nothingMorePlaced();
    expect(agent.runs()).toHaveLength(3);
    const conn = lb.gateway.services.hub.agents()[0]!;
    expect(conn.memoryCommitted).toBe(768 * MiB);
    // One ends: its memory is released and the fourth is placed.
    agent.succeed(agent.runs()[0]!);
    await until(() => agent.runs().length === 4);
    expect(agent.runs()[3]!.jobId).toBe(ids.find((id) => !agent.runs().slice(0, 3).some((r) => r.jobId === id)));
    expect(conn.memoryCommitted).toBe(768 * MiB);
  });

  it('the reserve is a gateway setting: with CORRAL_MEMORY_RESERVE=512M the same agent runs two', async () => {
    lb = await loopbackGateway({ CORRAL_MEMORY_RESERVE: '512M' });
    const agent = await fakeAgent(lb.url, lb.agentToken, { name: 'small', memoryBytes: GiB, slots: 8 });
    agents.push(agent);
    const token = await lb.tenant('acme', { maxConcurrent: 10 });
    for (let i = 0; i < 3; i++) await lb.req('POST', '/v1/jobs', token, { command: 'true', memory: '256M' });
    await until(() => agent.runs().length === 2);
    nothingMorePlaced();
    expect(agent.runs()).toHaveLength(2);
  });

  it('a job bigger than any agent can allocate is 422 naming memory; one that fits only the big agent goes there', async () => {
    lb = await loopbackGateway();
    const small = await fakeAgent(lb.url, lb.agentToken, { name: 'small', memoryBytes: GiB, slots: 8 });
    const big = await fakeAgent(lb.url, lb.agentToken, { name: 'big', memoryBytes: 4 * GiB, slots: 1 });
    agents.push(small, big);
    const token = await lb.tenant('acme', { maxMemoryBytes: 8 * GiB });
    const tooBig = await lb.req('POST', '/v1/jobs', token, { command: 'true', memory: '4G' });
    expect(tooBig.status).toBe(422);
    expect(tooBig.body.errors.map((e: { field: string }) => e.field)).toContain('memory');
    const fits = await lb.req('POST', '/v1/jobs', token, { command: 'true', memory: '2G' });
    expect(fits.status).toBe(202);
    expect((await big.nextRun()).jobId).toBe(fits.body.id);
    expect(small.runs()).toEqual([]);
  });

  it('memory of an attempt the gateway dropped (job deleted while running) is released at the next heartbeat', async () => {
    lb = await loopbackGateway();
    const agent = await fakeAgent(lb.url, lb.agentToken, { name: 'solo', memoryBytes: GiB, slots: 8 });
    agents.push(agent);
    const token = await lb.tenant('acme');
    const first = await lb.req('POST', '/v1/jobs', token, { command: 'sleep 60', memory: '768M' });
    const run = await agent.nextRun();
    expect(run.jobId).toBe(first.body.id);
    const second = await lb.req('POST', '/v1/jobs', token, { command: 'true', memory: '256M' });
    nothingMorePlaced();
    expect(agent.runs()).toHaveLength(1);
    expect((await lb.req('DELETE', `/v1/jobs/${first.body.id}`, token)).status).toBe(204);
    // The agent stopped it and no longer lists it.
    agent.heartbeat([]);
    expect((await agent.nextRun()).jobId).toBe(second.body.id);
    expect(lb.gateway.services.hub.agents()[0]!.memoryCommitted).toBe(256 * MiB);
  });
});
