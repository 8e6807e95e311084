import Database from 'better-sqlite3';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { startAgent, type Agent } from '../agent/agent.js';
import { loadAgentConfig } from '../agent/config.js';
import { mintToken } from '../src/auth/tokens.js';
import { Connection, reconnectDelay } from '../agent/connection.js';
import { AgentMessage, CLOSE, PROTOCOL_VERSION, parseFrame, type GatewayMessage } from '../src/protocol/messages.js';
import { ensureBusybox } from './helpers/cluster.js';
import { runCli } from './helpers/process.js';
import { fakeAgent, loopbackGateway, until, type FakeAgent, type LoopbackGateway, type RunFrame } from './helpers/fake-agent.js';

/**
 * The protocol lifecycle between the gateway and its agents: cancels that outlive a disconnect,
 * fences on every frame, events after commit, liveness of the link, names bound to tokens, and
 * an agent that answers every run. Real gateway, real WebSockets on loopback; agents are fake
 * where the claim is about frames, real (LXC) where it is about what the agent runs.
 */

const quiet = pino({ level: 'silent' });
let lb: LoopbackGateway | undefined;
const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
  await lb?.close();
  lb = undefined;
});

const cancelsFor = (a: FakeAgent, jobId: string) => a.frames.filter((f) => f.type === 'cancel' && f.jobId === jobId).length;
/** A frame about a job that does not exist: the gateway answers it with a cancel, after every frame sent before it. */
const BARRIER = { jobId: `job_${'Z'.repeat(26)}`, fence: 1 };
async function barrier(a: FakeAgent): Promise<void> {
  const before = cancelsFor(a, BARRIER.jobId);
  a.heartbeat([BARRIER]);
  await until(() => cancelsFor(a, BARRIER.jobId) > before);
}
const hubAgent = (name: string) => lb!.gateway.services.hub.agents().find((a) => a.id === name);

describe('cancels', () => {
  it('a cancel issued while the agent is away reaches it at its next hello, and again at every heartbeat until it ends the attempt', async () => {
    lb = await loopbackGateway({ CORRAL_LEASE_MS: '60000' });
    const token = await lb.tenant('away');
    const first = await fakeAgent(lb.url, lb.agentToken, { name: 'roamer' });
    const { body: job } = await lb.req('POST', '/v1/jobs', token, { command: 'sleep 100' });
    const run = await first.nextRun();
    first.send({ type: 'started', jobId: run.jobId, fence: run.fence, container: 'c1' });
    await first.close();
    await until(() => hubAgent('roamer') === undefined);

    const cancelled = await lb.req('POST', `/v1/jobs/${job.id}/cancel`, token);
    expect(cancelled.body.state).toBe('running'); // cancelling: its agent must stop it

    const back = await fakeAgent(lb.url, lb.agentToken, { name: 'roamer', running: [{ jobId: run.jobId, fence: run.fence }] });
    cleanup.push(() => back.close());
    await until(() => cancelsFor(back, job.id) === 1);
    back.heartbeat([run]);
    await until(() => cancelsFor(back, job.id) === 2);

    back.send({ type: 'ended', jobId: run.jobId, fence: run.fence, result: { exitCode: null, signal: 'SIGKILL', reason: 'cancelled' } });
    back.heartbeat([]);
    await barrier(back);
    expect(cancelsFor(back, job.id)).toBe(2);
    expect((await lb.req('GET', `/v1/jobs/${job.id}`, token)).body.state).toBe('cancelled');
  });
});

describe('fences', () => {
  it('frames from an agent that does not hold the attempt change nothing', async () => {
    let skew = 0; // the gateway's clock runs ahead of the wall clock by this much
    lb = await loopbackGateway({ CORRAL_LEASE_MS: '10000' }, { clock: () => Date.now() + skew });
    const token = await lb.tenant('fenced');
    const holder = await fakeAgent(lb.url, lb.agentToken, { name: 'holder', slots: 1 });
    const other = await fakeAgent(lb.url, lb.agentToken, { name: 'other', images: ['elsewhere'] });
    cleanup.push(() => holder.close(), () => other.close());
    const { body: job } = await lb.req('POST', '/v1/jobs', token, { command: 'echo mine' });
    const run = await holder.nextRun();
    const lease = () => lb!.gateway.services.store.sqlite.prepare('SELECT lease_expires_at FROM jobs WHERE id = ?').pluck().get(job.id);
    const leaseBefore = lease();
    skew += 1000;

    const at = { jobId: run.jobId, fence: run.fence };
    other.send({ type: 'started', ...at, container: 'intruder' });
    other.send({ type: 'output', ...at, stream: 'stdout', data: Buffer.from('forged\n').toString('base64') });
    other.send({ type: 'ended', ...at, result: { exitCode: 0, signal: null, reason: 'exit' } });
    other.heartbeat([at]);
    await until(() => cancelsFor(other, job.id) === 2); // its start and its heartbeat: each told to stop

    const view = (await lb.req('GET', `/v1/jobs/${job.id}`, token)).body;
    expect(view.state).toBe('running');
    expect(view.attempts[0].container).toBeNull();
    expect(view.outputBytes).toBe(0);
    expect(lease()).toBe(leaseBefore);
    expect(hubAgent('holder')!.running.get(job.id)).toBe(run.fence);

    holder.send({ type: 'output', ...at, stream: 'stdout', data: Buffer.from('mine\n').toString('base64') });
    holder.succeed(run);
    await until(async () => (await lb!.req('GET', `/v1/jobs/${job.id}`, token)).body.state === 'succeeded');
    const out = await fetch(`${lb.url}/v1/jobs/${job.id}/output`, { headers: { authorization: `Bearer ${token}` } });
    expect(await out.text()).toBe('mine\n');
  });

  it('a heartbeat carrying an old fence does not free the slot of the job’s current attempt', async () => {
    let skew = 0; // the gateway's clock runs ahead of the wall clock by this much
    lb = await loopbackGateway({ CORRAL_LEASE_MS: '10000' }, { clock: () => Date.now() + skew });
    const token = await lb.tenant('slots');
    const agent = await fakeAgent(lb.url, lb.agentToken, { name: 'one-slot', slots: 1 });
    cleanup.push(() => agent.close());
    const { body: job } = await lb.req('POST', '/v1/jobs', token, { command: 'sleep 100' });
    const old = await agent.nextRun();
    // The agent goes quiet past the lease: the attempt is given up and the job queued again.
    skew += 11_000;
    lb.gateway.services.scheduler.reap(); // (or its timer did)
    agent.heartbeat([]); // it reports nothing: the slot of the given-up attempt comes free
    const current = await agent.nextRun();
    expect(current.jobId).toBe(job.id);
    expect(current.fence).toBeGreaterThan(old.fence);

    await lb.req('POST', '/v1/jobs', token, { command: 'true' }); // waits for that one slot
    agent.heartbeat([old]); // a late heartbeat from before the re-dispatch
    await until(() => cancelsFor(agent, job.id) === 1);
    expect(agent.frames.find((f) => f.type === 'cancel')).toMatchObject({ jobId: job.id, fence: old.fence });
    const conn = hubAgent('one-slot')!;
    expect(conn.running.get(job.id)).toBe(current.fence);
    expect(conn.capacity.slots - conn.running.size).toBe(0);
    lb.gateway.services.scheduler.runOnce();
    expect(agent.runs()).toHaveLength(2);
  });
});

describe('events after commit', () => {
  it('a job:ended listener reads the job final from a second connection to the database', async () => {
    lb = await loopbackGateway();
    const s = lb.gateway.services;
    const second = new Database(join(s.config.dataDir, 'corral.db'), { readonly: true });
    cleanup.push(() => second.close());
    const stateOf = second.prepare('SELECT state FROM jobs WHERE id = ?').pluck();
    const seen: unknown[] = [];
    s.machine.on('job:ended', (e) => seen.push(stateOf.get(e.jobId)));
    const token = await lb.tenant('durable');
    const agent = await fakeAgent(lb.url, lb.agentToken, { name: 'ender' });
    cleanup.push(() => agent.close());
    await lb.req('POST', '/v1/jobs', token, { command: 'true' });
    agent.succeed(await agent.nextRun());
    await until(() => seen.length === 1);
    expect(seen).toEqual(['succeeded']);
  });

  it('a transition whose commit fails emits nothing', async () => {
    lb = await loopbackGateway();
    const s = lb.gateway.services;
    const ended: string[] = [];
    s.machine.on('job:ended', (e) => ended.push(e.jobId));
    const token = await lb.tenant('rollback');
    const { body: job } = await lb.req('POST', '/v1/jobs', token, { command: 'true' }); // no agent: it stays queued
    // A write in the same group that breaks a deferred foreign key: the group's COMMIT fails, as
    // it would on a full disk, and every write in it rolls back.
    const cancel = s.jobs.cancel('rollback', job.id);
    const poison = s.store.commit(() => {
      s.store.sqlite.pragma('defer_foreign_keys = ON');
      s.store.sqlite.prepare(`INSERT INTO output (job_id, attempt, stream, data) VALUES ('job_missing', 1, 'stdout', x'00')`).run();
    });
    await expect(poison).rejects.toThrow(/FOREIGN KEY/);
    await expect(cancel).rejects.toThrow(/FOREIGN KEY/);
    expect(ended).toEqual([]);
    expect((await lb.req('GET', `/v1/jobs/${job.id}`, token)).body.state).toBe('queued');
  });
});

describe('liveness', () => {
  it('the gateway drops an agent that stops answering pings, and its attempt runs elsewhere after the lease', async () => {
    lb = await loopbackGateway({ CORRAL_LEASE_MS: '1000' }); // pings every 500 ms
    const token = await lb.tenant('silent');
    const mute = await fakeAgent(lb.url, lb.agentToken, { name: 'mute', autoPong: false });
    const { body: job } = await lb.req('POST', '/v1/jobs', token, { command: 'echo again' });
    const lost = await mute.nextRun();
    const spare = await fakeAgent(lb.url, lb.agentToken, { name: 'spare' });
    cleanup.push(() => spare.close(), () => mute.close());
    await until(() => mute.closed !== undefined, 5000);
    expect(hubAgent('mute')).toBeUndefined();
    const rerun = await spare.nextRun(5000);
    expect(rerun).toMatchObject({ jobId: job.id, attempt: 2 });
    expect(rerun.fence).toBeGreaterThan(lost.fence);
  });

  it('an agent drops a gateway link that goes silent and dials again', async () => {
    const wss = new WebSocketServer({ port: 0, autoPong: false });
    cleanup.push(() => new Promise((r) => wss.close(r)));
    let dials = 0;
    wss.on('connection', (ws) => {
      dials++;
      ws.once('message', () => ws.send(JSON.stringify({ type: 'welcome', version: PROTOCOL_VERSION, agent: 'x', heartbeatMs: 100, leaseMs: 300 })));
    });
    const conn = new Connection({ gateway: `ws://127.0.0.1:${(wss.address() as { port: number }).port}`, token: 't', log: quiet, hello: () => hello('x'), minDelayMs: 1, maxDelayMs: 5 });
    cleanup.push(() => conn.close());
    conn.start();
    await until(() => dials >= 2, 5000);
  });
});

describe('results', () => {
  it('the gateway acknowledges a result once it is on disk, and a result sent twice is recorded once', async () => {
    lb = await loopbackGateway({ CORRAL_LEASE_MS: '60000' });
    const token = await lb.tenant('acked');
    const agent = await fakeAgent(lb.url, lb.agentToken, { name: 'acker' });
    cleanup.push(() => agent.close());
    const { body: job } = await lb.req('POST', '/v1/jobs', token, { command: 'true' });
    const run = await agent.nextRun();
    const ended = { type: 'ended', jobId: run.jobId, fence: run.fence, container: 'c1', result: { exitCode: 0, signal: null, reason: 'exit', wallMs: 5 } } as const;
    const acks = () => agent.frames.filter((f) => f.type === 'ack' && f.jobId === job.id && f.fence === run.fence).length;
    agent.send(ended);
    await until(() => acks() === 1);
    agent.send(ended); // again, as after a reconnect that lost the first ack
    await until(() => acks() === 2);
    const { body } = await lb.req('GET', `/v1/jobs/${job.id}`, token);
    expect(body.state).toBe('succeeded');
    expect(body.attempts).toHaveLength(1);
  });

  it('output sent again after a reconnect, each chunk with its offset, is stored once', async () => {
    lb = await loopbackGateway({ CORRAL_LEASE_MS: '60000' });
    const token = await lb.tenant('offsets');
    const agent = await fakeAgent(lb.url, lb.agentToken, { name: 'resender' });
    cleanup.push(() => agent.close());
    const { body: job } = await lb.req('POST', '/v1/jobs', token, { command: 'echo' });
    const run = await agent.nextRun();
    const chunk = (text: string, offset?: number) =>
      agent.send({ type: 'output', jobId: run.jobId, fence: run.fence, stream: 'stdout', data: Buffer.from(text).toString('base64'), ...(offset !== undefined && { offset }) });
    chunk('ab'); // arrived live
    chunk('ab', 0); // both sent again: the first is already stored, the second was lost
    chunk('cd', 2);
    chunk('bcd', 1); // overlapping what is stored: nothing new
    chunk('ef', 4);
    agent.send({ type: 'ended', jobId: run.jobId, fence: run.fence, result: { exitCode: 0, signal: null, reason: 'exit', wallMs: 5 } });
    await until(async () => (await lb!.req('GET', `/v1/jobs/${job.id}`, token)).body.state === 'succeeded');
    const out = await fetch(`${lb.url}/v1/jobs/${job.id}/output`, { headers: { authorization: `Bearer ${token}` } });
    expect(await out.text()).toBe('abcdef');
  });

  it('a result reporting more output than the gateway stored marks the job output truncated', async () => {
    lb = await loopbackGateway({ CORRAL_LEASE_MS: '60000' });
    const token = await lb.tenant('short');
    const agent = await fakeAgent(lb.url, lb.agentToken, { name: 'lossy' });
    cleanup.push(() => agent.close());
    const views = [];
    for (const outputBytes of [4, 2]) {
      const { body: job } = await lb.req('POST', '/v1/jobs', token, { command: 'echo' });
      const run = await agent.nextRun();
      agent.send({ type: 'output', jobId: run.jobId, fence: run.fence, stream: 'stdout', data: Buffer.from('ab').toString('base64') });
      agent.send({ type: 'ended', jobId: run.jobId, fence: run.fence, outputBytes, result: { exitCode: 0, signal: null, reason: 'exit', wallMs: 5 } });
      await until(async () => (await lb!.req('GET', `/v1/jobs/${job.id}`, token)).body.state === 'succeeded');
      views.push((await lb.req('GET', `/v1/jobs/${job.id}`, token)).body);
    }
    // Two of four bytes stored: the lost two are recorded as truncation, not silently missing.
    expect(views.map((v) => v.outputTruncated)).toEqual([true, false]);
  });

  it('output past what an agent keeps waits for the link behind the kept chunks, and the result says how much was sent', async () => {
    const wss = new WebSocketServer({ port: 0 });
    cleanup.push(() => new Promise((r) => wss.close(r)));
    const frames: string[] = [];
    let link: WebSocket | undefined;
    wss.on('connection', (ws) => {
      link = ws;
      ws.on('message', (data) => {
        const m = JSON.parse(String(data)) as AgentMessage;
        if (m.type === 'output') frames.push(`${m.offset ?? '-'}:${Buffer.from(m.data, 'base64').toString()}`);
        if (m.type === 'ended') frames.push(`ended:${m.outputBytes}`);
      });
    });
    const conn = new Connection({ gateway: `ws://127.0.0.1:${(wss.address() as { port: number }).port}`, token: 't', log: quiet, hello: () => hello('x'), minDelayMs: 1, maxDelayMs: 5, keptOutputBytes: 4 });
    cleanup.push(() => conn.close());
    conn.start();
    await until(() => link !== undefined);
    // Not welcomed yet: the link is not the agent's to use, so everything waits.
    const a = `job_${'C'.repeat(26)}`;
    for (const text of ['ab', 'cd', 'ef', 'gh']) conn.send({ type: 'output', jobId: a, fence: 1, stream: 'stdout', data: Buffer.from(text).toString('base64') });
    conn.send({ type: 'ended', jobId: a, fence: 1, result: { exitCode: 0, signal: null, reason: 'exit' } });
    link!.send(JSON.stringify({ type: 'welcome', version: PROTOCOL_VERSION, agent: 'x', heartbeatMs: 5000, leaseMs: 15000 } satisfies GatewayMessage));
    await until(() => frames.some((f) => f.startsWith('ended')));
    // The kept bytes with their offsets first, then the rest in order (the gateway appends them), then the result.
    expect(frames).toEqual(['0:ab', '2:cd', '-:ef', '-:gh', 'ended:8']);
  });

  it('an agent sends a result again until it is acknowledged, after each welcome and while the link stays up', async () => {
    const wss = new WebSocketServer({ port: 0 });
    cleanup.push(() => new Promise((r) => wss.close(r)));
    const received: string[] = [];
    const outputs: string[] = [];
    let ack = false;
    let link: WebSocket | undefined;
    wss.on('connection', (ws) => {
      link = ws;
      ws.on('message', (data) => {
        const m = JSON.parse(String(data)) as AgentMessage;
        if (m.type === 'hello') return void ws.send(JSON.stringify({ type: 'welcome', version: PROTOCOL_VERSION, agent: 'x', heartbeatMs: 50, leaseMs: 5000 }));
        if (m.type === 'output') return void outputs.push(`${m.offset ?? '-'}:${Buffer.from(m.data, 'base64').toString()}`);
        if (m.type !== 'ended') return;
        received.push(m.jobId);
        if (ack) ws.send(JSON.stringify({ type: 'ack', jobId: m.jobId, fence: m.fence } satisfies GatewayMessage));
      });
    });
    const conn = new Connection({ gateway: `ws://127.0.0.1:${(wss.address() as { port: number }).port}`, token: 't', log: quiet, hello: () => hello('x'), minDelayMs: 1, maxDelayMs: 5 });
    cleanup.push(() => conn.close());
    conn.start();
    await until(() => conn.open);
    const result = { exitCode: 0, signal: null, reason: 'exit' as const };
    const a = `job_${'A'.repeat(26)}`;
    conn.send({ type: 'output', jobId: a, fence: 1, stream: 'stdout', data: Buffer.from('hello ').toString('base64') });
    conn.send({ type: 'output', jobId: a, fence: 1, stream: 'stderr', data: Buffer.from('world').toString('base64') });
    conn.send({ type: 'ended', jobId: a, fence: 1, result });
    // Not acknowledged (the gateway could not write it): sent again while the link stays up.
    await until(() => received.filter((j) => j === a).length >= 3);
    // A new link: sent again right after the welcome; acknowledged there, then never again.
    ack = true;
    const before = received.length;
    link!.terminate();
    await until(() => received.length > before);
    expect(conn.unacknowledged).toBe(0);
    // Live without offsets; sent again with each chunk's offset in the attempt's output, before its result.
    expect(outputs.slice(0, 2)).toEqual(['-:hello ', '-:world']);
    expect(outputs.slice(-2)).toEqual(['0:hello ', '6:world']);
    const after = received.length;
    const b = `job_${'B'.repeat(26)}`;
    conn.send({ type: 'ended', jobId: b, fence: 2, result });
    await until(() => received.includes(b));
    await until(() => conn.unacknowledged === 0);
    // Six more heartbeats: nothing acknowledged goes out again.
    await new Promise((r) => setTimeout(r, 300));
    expect(received.slice(after)).toEqual([b]);
  });
});

describe('agent names', () => {
  it('an agent connects only under the name its token allows', async () => {
    lb = await loopbackGateway();
    const other = fakeAgent(lb.url, await lb.agentTokenFor('alpha'), { name: 'beta' });
    await expect(other).rejects.toMatchObject({ code: CLOSE.nameRefused });
    const unbound = fakeAgent(lb.url, await mint(lb, 'agent'), { name: 'agent' });
    await expect(unbound).rejects.toMatchObject({ code: CLOSE.nameRefused });
    expect(lb.gateway.services.hub.count()).toBe(0);
  });

  it('a second link for a connected name is refused and the first keeps its attempts', async () => {
    // A 3 s lease: heartbeats, and the ping the first link is asked to answer, every second.
    lb = await loopbackGateway({ CORRAL_LEASE_MS: '3000' });
    const token = await lb.tenant('names');
    const first = await fakeAgent(lb.url, lb.agentToken, { name: 'twin' });
    cleanup.push(() => first.close());
    await lb.req('POST', '/v1/jobs', token, { command: 'true' });
    const run = await first.nextRun();
    await expect(fakeAgent(lb.url, lb.agentToken, { name: 'twin' })).rejects.toMatchObject({ code: CLOSE.nameInUse, reason: 'agent name in use' });
    // Past the heartbeat the probe waits: the first link answered its ping and stays.
    await new Promise((r) => setTimeout(r, 1500));
    expect(first.closed).toBeUndefined();
    expect(hubAgent('twin')!.running.get(run.jobId)).toBe(run.fence);
    first.succeed(run);
    await until(() => hubAgent('twin')!.running.size === 0);
  });

  it('a half-open link holding the name is dropped within a heartbeat of a second dial, not a lease, and the next dial gets in', async () => {
    // A 6 s lease, heartbeats every 2 s: the liveness check alone would drop the silent link 6–8 s after it was last heard.
    lb = await loopbackGateway({ CORRAL_LEASE_MS: '6000' });
    const stale = await fakeAgent(lb.url, lb.agentToken, { name: 'reborn', autoPong: false });
    cleanup.push(() => stale.close());
    const heard = Date.now();
    await expect(fakeAgent(lb.url, lb.agentToken, { name: 'reborn' })).rejects.toMatchObject({ code: CLOSE.nameInUse });
    await until(() => stale.closed !== undefined, 10_000);
    expect(Date.now() - heard).toBeLessThan(4500);
    const back = await fakeAgent(lb.url, lb.agentToken, { name: 'reborn' });
    cleanup.push(() => back.close());
    expect(hubAgent('reborn')).toBeDefined();
  });

  it('an agent dials again within a quarter of the lease the gateway announced, however long its dials have failed', () => {
    const high = () => 0.999;
    // Before any welcome no lease is known: the backoff grows to its cap (10 s).
    expect(reconnectDelay(20, false, {}, undefined, high)).toBeCloseTo(9990);
    // A 15 s lease: at most 3.75 s, so a gateway back from a restart hears it within the lease it renewed.
    expect(reconnectDelay(20, false, {}, 15_000, high)).toBeCloseTo(3746.25);
    expect(reconnectDelay(1, false, {}, 15_000, high)).toBeCloseTo(499.5);
    expect(reconnectDelay(0, true, { maxDelayMs: 60_000 }, 5000)).toBe(1250);
    // A gateway announcing an absurd lease does not make the agent dial in a tight loop.
    expect(reconnectDelay(0, true, {}, 1)).toBe(250);
  });

  it('an agent stops dialling when its name is refused, and waits its longest backoff when the name is in use', async () => {
    lb = await loopbackGateway();
    let upgrades = 0;
    lb.gateway.server.on('upgrade', () => upgrades++);
    const refused = new Connection({ gateway: lb.url.replace('http', 'ws'), token: await lb.agentTokenFor('mine'), log: quiet, hello: () => hello('yours'), minDelayMs: 1, maxDelayMs: 5 });
    cleanup.push(() => refused.close());
    const why = new Promise<Error>((r) => refused.once('refused', r));
    refused.start();
    expect((await why).message).toMatch(/token is for agent mine/);
    const unknown = new Connection({ gateway: lb.url.replace('http', 'ws'), token: 'garbage', log: quiet, hello: () => hello('any'), minDelayMs: 1, maxDelayMs: 5 });
    cleanup.push(() => unknown.close());
    const denied = new Promise<Error>((r) => unknown.once('refused', r));
    unknown.start();
    expect((await denied).message).toMatch(/HTTP 401/);

    const holder = await fakeAgent(lb.url, lb.agentToken, { name: 'taken' });
    cleanup.push(() => holder.close());
    const late = new Connection({ gateway: lb.url.replace('http', 'ws'), token: await lb.agentTokenFor('taken'), log: quiet, hello: () => hello('taken'), minDelayMs: 1, maxDelayMs: 60_000 });
    cleanup.push(() => late.close());
    const closed = new Promise<void>((r) => late.once('close', r));
    late.start();
    await closed;
    const seen = upgrades;
    // Without the refusals above each would dial again within a few ms, over and over.
    await new Promise((r) => setTimeout(r, 300));
    expect(upgrades).toBe(seen);
    expect(upgrades).toBe(4); // one each: the wrong name, the bad token, the holder, the late twin
  });
});

describe('corral agent', () => {
  it('exits 2 with the reason when the gateway refuses its name, instead of dialling again', async () => {
    lb = await loopbackGateway();
    const token = (await runCli(['token', '--scope', 'agent', '--name', 'lc-granted'], { CORRAL_DATA: lb.gateway.services.config.dataDir })).stdout.trim();
    const env = { CORRAL_GATEWAY: lb.url.replace('http', 'ws'), CORRAL_AGENT_TOKEN: token, CORRAL_WARM: '0', CORRAL_AGENT_IMAGES: 'busybox', CORRAL_LOG_LEVEL: 'silent' };
    const run = await runCli(['agent', '--name', 'lc-other'], env);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('token is for agent lc-granted');
  });
});

describe('runs an agent cannot start', () => {
  let agent: Agent | undefined;
  afterEach(async () => {
    await agent?.stop();
    agent = undefined;
  });

  it('are answered at once, and a re-dispatch of a job it still runs supersedes the old attempt', async () => {
    await ensureBusybox();
    const wss = new WebSocketServer({ port: 0 });
    cleanup.push(() => new Promise((r) => wss.close(r)));
    const frames: AgentMessage[] = [];
    let link: WebSocket | undefined;
    wss.on('connection', (ws) => {
      link = ws;
      ws.on('message', (data) => {
        const parsed = parseFrame(AgentMessage, data);
        if (!parsed.ok) return;
        frames.push(parsed.msg);
        if (parsed.msg.type === 'hello') ws.send(JSON.stringify({ type: 'welcome', version: PROTOCOL_VERSION, agent: 'lc-runner', heartbeatMs: 5000, leaseMs: 15000 }));
      });
    });
    const port = (wss.address() as { port: number }).port;
    agent = await startAgent(
      loadAgentConfig({ gateway: `ws://127.0.0.1:${port}`, token: 'unchecked', name: 'lc-runner', slots: '1', warm: '0', 'kill-grace-ms': '300', images: 'busybox' }, {}),
      quiet,
    );
    await until(() => link !== undefined && frames.some((f) => f.type === 'hello'), 10_000);
    const send = (m: GatewayMessage) => link!.send(JSON.stringify(m));
    const ended = (jobId: string, fence: number) => frames.find((f) => f.type === 'ended' && f.jobId === jobId && f.fence === fence) as Extract<AgentMessage, { type: 'ended' }> | undefined;
    const run = (jobId: string, fence: number, command: string, image = 'busybox'): RunFrame => ({
      type: 'run',
      jobId,
      fence,
      tenant: 'lc',
      attempt: 1,
      spec: { command, image, timeout: 60, env: {}, fresh: false, network: false, memory: 64 * 1024 ** 2 },
    });
    const J1 = `job_${'1'.repeat(26)}`;
    const J2 = `job_${'2'.repeat(26)}`;
    const J3 = `job_${'3'.repeat(26)}`;
    const J4 = `job_${'4'.repeat(26)}`;

    send(run(J1, 10, 'sleep 60'));
    await until(() => frames.some((f) => f.type === 'started' && f.jobId === J1), 30_000);
    send(run(J1, 11, 'echo again')); // the gateway gave attempt 10 up and sent the job again
    await until(() => ended(J1, 11) !== undefined, 30_000);
    expect(ended(J1, 10)!.result.reason).toBe('cancelled');
    expect(ended(J1, 11)!.result).toMatchObject({ reason: 'exit', exitCode: 0 });
    const again = frames.filter((f) => f.type === 'output' && f.jobId === J1 && f.fence === 11);
    expect(again.map((f) => Buffer.from((f as { data: string }).data, 'base64').toString()).join('')).toBe('again\n');

    send(run(J2, 20, 'sleep 60'));
    await until(() => frames.some((f) => f.type === 'started' && f.jobId === J2), 30_000);
    send(run(J3, 30, 'true')); // its one slot is taken
    await until(() => ended(J3, 30) !== undefined, 5000);
    expect(ended(J3, 30)!.result).toMatchObject({ reason: 'agent_error', fault: 'platform', detail: expect.stringMatching(/no free slot/) });
    send(run(J4, 40, 'true', 'no-such-image'));
    await until(() => ended(J4, 40) !== undefined, 5000);
    expect(ended(J4, 40)!.result).toMatchObject({ reason: 'agent_error', fault: 'platform', detail: expect.stringMatching(/no-such-image/) });
    expect(ended(J2, 20)).toBeUndefined(); // the attempt that holds the slot runs on
  });
});

function hello(agent: string): AgentMessage {
  return {
    type: 'hello',
    version: PROTOCOL_VERSION,
    agent,
    capacity: { cpus: 1, memoryBytes: 1e9, slots: 1 },
    images: ['busybox'],
    pool: { containers: 0, blank: {}, warm: [], busy: 0, recycled: 0 },
    running: [],
  };
}

/** A token of scope agent whose subject names no agent (what tokens looked like before names were bound). */
function mint(g: LoopbackGateway, sub: string): Promise<string> {
  return mintToken({ secret: g.gateway.services.secret, issuer: 'corral', audience: 'corral', sub, scopes: ['agent'], ttlSeconds: 60 });
}
