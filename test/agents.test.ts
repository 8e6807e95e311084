import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { destroyLeftovers } from '../agent/pool/container.js';
import { warmKey } from '../src/agents/conn.js';
import { mintToken } from '../src/auth/tokens.js';
import { AGENT_PATH, PROTOCOL_VERSION } from '../src/protocol/messages.js';
import { startCluster, until, type Cluster } from './helpers/cluster.js';
import { killed, startCli } from './helpers/process.js';

let cluster: Cluster | undefined;
afterEach(async () => {
  await cluster?.stop();
  cluster = undefined;
});

const emptyPool = { containers: 0, blank: {}, warm: [], busy: 0, recycled: 0 };

function rawAgent(url: string, token: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace('http', 'ws') + AGENT_PATH, { headers: { authorization: `Bearer ${token}` } });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

describe('agents', () => {
  it('two agents share a burst of jobs', async () => {
    cluster = await startCluster({ agents: ['sa', 'sb'] });
    const t = await cluster.tenant('burst', { maxConcurrent: 16 });
    const jobs = await Promise.all(Array.from({ length: 12 }, () => t.submit({ command: 'sleep 0.5' })));
    const done = await Promise.all(jobs.map((j) => t.until(j.job.id)));
    expect(done.every((j) => j.state === 'succeeded')).toBe(true);
    const agents = new Set(done.map((j) => j.attempts[0]!.agent));
    expect(agents).toEqual(new Set(['sa', 'sb']));
  });

  it('places a tenant’s job on the agent holding its warm container, known before the next heartbeat', async () => {
    cluster = await startCluster({ agents: [], leaseMs: 30_000 }); // heartbeats every 10 s
    await cluster.addAgent('wx', { slots: '2' });
    const t = await cluster.tenant('warmth');
    const first = await t.submit({ command: 'true' }, 30);
    expect(first.job.attempts[0]!.agent).toBe('wx');
    // A roomier agent arrives; without knowing where the warm container is, it would win.
    await cluster.addAgent('wy', { slots: '8' });
    const wx = () => cluster!.gateway.services.hub.agents().find((a) => a.id === 'wx')!;
    await until(() => (wx().warm.get(warmKey('warmth', 'busybox')) ?? 0) > 0, 2000);
    const second = await t.submit({ command: 'true' }, 30);
    expect(second.job.attempts[0]!.agent).toBe('wx');
    expect(second.job.attempts[0]!.container).toBe(first.job.attempts[0]!.container);
  });

  it('respects a tenant’s maxConcurrent', async () => {
    cluster = await startCluster({ agents: ['mc'] });
    const t = await cluster.tenant('narrow', { maxConcurrent: 1 });
    const jobs = await Promise.all(Array.from({ length: 3 }, () => t.submit({ command: 'sleep 0.3' })));
    const done = await Promise.all(jobs.map((j) => t.until(j.job.id)));
    const spans = done.map((j) => [Date.parse(j.attempts[0]!.startedAt!), Date.parse(j.attempts[0]!.endedAt!)] as const).sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < spans.length; i++) expect(spans[i]![0]).toBeGreaterThanOrEqual(spans[i - 1]![1]);
  });

  it('recycles a container after maxUses and an idle one after its TTL', async () => {
    cluster = await startCluster({ agents: [] });
    const agent = await cluster.addAgent('ttl', { 'max-uses': '2', 'idle-ttl': '1' });
    const t = await cluster.tenant('cycler');
    const containers: string[] = [];
    for (let i = 0; i < 3; i++) containers.push((await t.submit({ command: 'true' }, 30)).job.attempts[0]!.container!);
    expect(containers[1]).toBe(containers[0]);
    expect(containers[2]).not.toBe(containers[0]);
    expect(agent.pool.summary().warm).toEqual([{ tenant: 'cycler', image: 'busybox', idle: 1 }]);
    await until(() => agent.pool.summary().warm.length === 0, 5000, 100);
    const next = await t.submit({ command: 'true' }, 30);
    expect(containers).not.toContain(next.job.attempts[0]!.container);
  });

  it('kill -9 of an agent mid-job: the job finishes on the other agent without using a retry', async () => {
    cluster = await startCluster({ agents: [] });
    const victim = await startCli(
      ['agent', '--name', 'victim', '--slots', '2', '--warm', '1'],
      { CORRAL_GATEWAY: cluster.url.replace('http', 'ws'), CORRAL_AGENT_TOKEN: await cluster.agentToken('victim'), CORRAL_LOG_LEVEL: 'info' },
      /connected to gateway/,
    );
    try {
      const t = await cluster.tenant('resilient');
      const { job } = await t.submit({ command: 'sleep 2; echo finished', retries: 0 });
      await until(async () => (await t.get(job.id)).attempts[0]?.startedAt != null, 20_000);
      await killed(victim.child, 'SIGKILL');
      await cluster.addAgent('survivor');
      const done = await t.until(job.id, 30_000);
      expect(done.state).toBe('succeeded');
      expect(done.attempts.map((a) => [a.agent, a.reason])).toEqual([
        ['victim', 'agent_error'],
        ['survivor', 'exit'],
      ]);
      expect(await t.output(job.id)).toBe('finished\n');
    } finally {
      await killed(victim.child, 'SIGKILL');
      await destroyLeftovers({ agent: 'victim', lxcPath: '/var/lib/lxc', executor: '', diskBytes: 0 });
    }
  });

  it('an agent that reconnects keeps the attempts it is running', async () => {
    cluster = await startCluster({ agents: ['rc'] });
    const t = await cluster.tenant('steady');
    const { job } = await t.submit({ command: 'sleep 1.5; echo ok' });
    await until(async () => (await t.get(job.id)).startedAt !== null, 20_000);
    // Cut the link from the gateway's side; the agent dials again and reports its running attempt.
    cluster.gateway.services.hub.agents()[0]!.ws.terminate();
    const done = await t.until(job.id, 30_000);
    expect(done.state).toBe('succeeded');
    expect(done.attempts).toHaveLength(1);
    expect(await t.output(job.id)).toBe('ok\n');
  });
});

describe('the agent protocol edge', () => {
  it('refuses upgrades without an agent-scope token', async () => {
    cluster = await startCluster({ agents: [] });
    const s = cluster.gateway.services;
    await expect(rawAgent(cluster.url, 'garbage')).rejects.toThrow(/401/);
    const tenantToken = await mintToken({ secret: s.secret, issuer: 'corral', audience: 'corral', sub: 'x', scopes: ['admin'], ttlSeconds: 60 });
    await expect(rawAgent(cluster.url, tenantToken)).rejects.toThrow(/403/);
  });

  it('drops malformed frames without crashing, and rejects a late result with a stale fence', async () => {
    cluster = await startCluster({ agents: [] });
    const s = cluster.gateway.services;
    const ws = await rawAgent(cluster.url, await cluster.agentToken('raw'));
    const received: Array<{ type: string; jobId?: string; fence?: number }> = [];
    ws.on('message', (d) => received.push(JSON.parse(d.toString())));
    for (const junk of ['not json', '{"type":"nope"}', JSON.stringify({ type: 'ended', jobId: 'x' }), '[]', 'null', '{"type":"hello","version":"1"}']) ws.send(junk);
    ws.send(JSON.stringify({ type: 'hello', version: PROTOCOL_VERSION, agent: 'raw', capacity: { cpus: 1, memoryBytes: 1e9, slots: 1 }, images: ['busybox'], pool: emptyPool, running: [] }));
    await until(() => received.some((m) => m.type === 'welcome'), 5000);
    const t = await cluster.tenant('fenced');
    const { job } = await t.submit({ command: 'true' });
    await until(() => received.some((m) => m.type === 'run'), 5000);
    const run = received.find((m) => m.type === 'run')!;
    ws.send(JSON.stringify({ type: 'ended', jobId: job.id, fence: run.fence! + 7, result: { exitCode: 0, signal: null, reason: 'exit' } }));
    await new Promise((r) => setTimeout(r, 200));
    expect((await t.get(job.id)).state).toBe('running');
    ws.send(JSON.stringify({ type: 'ended', jobId: job.id, fence: run.fence, result: { exitCode: 0, signal: null, reason: 'exit' } }));
    expect((await t.until(job.id, 5000)).state).toBe('succeeded');
    expect(s.hub.count()).toBe(1);
    ws.close();
  });

  it('a cancel of a running job reaches its agent', async () => {
    cluster = await startCluster({ agents: [] });
    const ws = await rawAgent(cluster.url, await cluster.agentToken('raw2'));
    const received: Array<{ type: string; jobId?: string; fence?: number }> = [];
    ws.on('message', (d) => received.push(JSON.parse(d.toString())));
    ws.send(JSON.stringify({ type: 'hello', version: PROTOCOL_VERSION, agent: 'raw2', capacity: { cpus: 1, memoryBytes: 1e9, slots: 1 }, images: ['busybox'], pool: emptyPool, running: [] }));
    const t = await cluster.tenant('cancelme');
    const { job } = await t.submit({ command: 'sleep 100' });
    await until(() => received.some((m) => m.type === 'run'), 5000);
    await t.request('POST', `/v1/jobs/${job.id}/cancel`);
    await until(() => received.some((m) => m.type === 'cancel' && m.jobId === job.id), 5000);
    ws.close();
  });
});
