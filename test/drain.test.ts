import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { startAgent } from '../agent/agent.js';
import { lxcLs } from '../agent/lxc/lxc.js';
import { loadAgentConfig } from '../agent/config.js';
import { ensureBusybox, startCluster, until } from './helpers/cluster.js';
import { CLI, freePort, killed, runCli, startCli } from './helpers/process.js';

const quiet = pino({ level: 'silent' });

async function api(base: string, token: string, method: string, path: string, body?: unknown) {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  return { status: res.status, headers: res.headers, body: (await res.json().catch(() => null)) as Record<string, any> };
}

/** A `corral gateway` process with a tenant, its token, and an in-process agent dialled in. */
async function gatewayWithAgent(name: string, drainMs: number) {
  await ensureBusybox();
  const data = mkdtempSync(join(tmpdir(), 'corral-drain-'));
  const port = await freePort();
  const env = { CORRAL_DATA: data, CORRAL_PORT: String(port), CORRAL_DRAIN_MS: String(drainMs) };
  const base = `http://127.0.0.1:${port}`;
  const gw = await startCli(['gateway'], env, /gateway listening/);
  const admin = readFileSync(join(data, 'admin.token'), 'utf8').trim();
  expect((await api(base, admin, 'POST', '/v1/tenants', { id: 'acme' })).status).toBe(201);
  const [tenant, agentToken] = await Promise.all([
    runCli(['token', '--tenant', 'acme', '--scope', 'jobs:read jobs:write functions:read functions:write'], env),
    runCli(['token', '--scope', 'agent', '--name', name], env),
  ]);
  const agent = await startAgent(
    loadAgentConfig({ gateway: `ws://127.0.0.1:${port}`, token: agentToken.stdout.trim(), name, slots: '2', warm: '1', 'kill-grace-ms': '300', images: 'busybox' }, {}),
    quiet,
  );
  await until(async () => (await api(base, admin, 'GET', '/v1/agents')).body?.agents?.some((a: { id: string }) => a.id === name), 10_000, 50);
  return { gw, base, token: tenant.stdout.trim(), agent };
}

const exited = (child: import('node:child_process').ChildProcess) =>
  new Promise<number | null>((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.once('exit', (code) => resolve(code))));

describe('graceful shutdown', () => {
  it('SIGTERM to corral gateway: new work gets 503, reads are served, the running job finishes succeeded, then it exits', async () => {
    const { gw, base, token, agent } = await gatewayWithAgent('drain-gw', 20_000);
    try {
      const job = await api(base, token, 'POST', '/v1/jobs', { command: 'sleep 1.5; echo done', timeout: 30 });
      await until(async () => (await api(base, token, 'GET', `/v1/jobs/${job.body.id}`)).body.state === 'running', 20_000, 50);
      const signalledAt = Date.now();
      const exit = exited(gw.child);
      gw.child.kill('SIGTERM');
      await until(() => gw.output().includes('draining'), 5000, 20);

      const refused = await api(base, token, 'POST', '/v1/jobs', { command: 'echo late' });
      expect(refused.status).toBe(503);
      expect(refused.headers.get('content-type')).toMatch(/application\/problem\+json/);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
      const invoke = await fetch(`${base}/v1/functions/any/invoke`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: 'x' });
      expect(invoke.status).toBe(503);
      const hook = await fetch(`${base}/hooks/trg_00000000000000000000000000`, { method: 'POST', body: '{}' });
      expect(hook.status).toBe(503);

      // Reads are still served, and the job ends as it would have.
      const end = await api(base, token, 'GET', `/v1/jobs/${job.body.id}?wait=20`);
      expect(end.body.state).toBe('succeeded');
      expect(await exit).toBe(0);
      // It left as soon as the job was done, well inside the 20 s drain.
      expect(Date.now() - signalledAt).toBeLessThan(10_000);
    } finally {
      await killed(gw.child);
      await agent.stop();
    }
  });

  it('SIGTERM to corral gateway: a job that outlasts the drain timeout does not hold the exit past it', async () => {
    const { gw, base, token, agent } = await gatewayWithAgent('drain-gw2', 1000);
    try {
      const job = await api(base, token, 'POST', '/v1/jobs', { command: 'sleep 30', timeout: 60 });
      await until(async () => (await api(base, token, 'GET', `/v1/jobs/${job.body.id}`)).body.state === 'running', 20_000, 50);
      const signalledAt = Date.now();
      const exit = exited(gw.child);
      gw.child.kill('SIGTERM');
      expect(await exit).toBe(0);
      const took = Date.now() - signalledAt;
      expect(took).toBeGreaterThanOrEqual(900);
      expect(took).toBeLessThan(1000 + 4000);
      expect(gw.output()).toMatch(/drain timed out/);
    } finally {
      await killed(gw.child);
      await agent.stop();
    }
  });

  it('a second signal stops the gateway at once, mid-drain', async () => {
    const { gw, base, token, agent } = await gatewayWithAgent('drain-gw3', 30_000);
    try {
      const job = await api(base, token, 'POST', '/v1/jobs', { command: 'sleep 30', timeout: 60 });
      await until(async () => (await api(base, token, 'GET', `/v1/jobs/${job.body.id}`)).body.state === 'running', 20_000, 50);
      const exit = exited(gw.child);
      gw.child.kill('SIGTERM');
      await until(() => gw.output().includes('draining'), 5000, 20);
      const second = Date.now();
      gw.child.kill('SIGTERM');
      expect(await exit).toBe(1);
      expect(Date.now() - second).toBeLessThan(2000);
    } finally {
      await killed(gw.child);
      await agent.stop();
    }
  });

  it('Ctrl-C to corral up (SIGINT to its process group): new work gets 503, the local agent finishes its running job, then both exit', async () => {
    const data = mkdtempSync(join(tmpdir(), 'corral-drain-up-'));
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const args = ['up', '--data', data, '--port', String(port), '--warm', '1', '--name', 'drainup', '--kill-grace-ms', '300'];
    // Its own process group, as a shell gives a foreground job: a Ctrl-C reaches up and its agent alike.
    const up = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, CORRAL_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = '';
    up.stdout.on('data', (d: Buffer) => (out += d.toString()));
    up.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exit = exited(up);
    try {
      await until(() => /API reference/.test(out) || up.exitCode !== null, 120_000, 50);
      expect(up.exitCode).toBeNull();
      const token = readFileSync(join(data, 'default.token'), 'utf8').trim();
      const job = await api(base, token, 'POST', '/v1/jobs', { command: 'sleep 2; echo done', timeout: 30 });
      await until(async () => (await api(base, token, 'GET', `/v1/jobs/${job.body.id}`)).body.state === 'running', 20_000, 50);
      const signalledAt = Date.now();
      process.kill(-up.pid!, 'SIGINT');
      await until(async () => (await api(base, token, 'POST', '/v1/jobs', { command: 'echo late' })).status === 503, 5000, 20);
      const end = await api(base, token, 'GET', `/v1/jobs/${job.body.id}?wait=20`);
      expect(end.body.state).toBe('succeeded');
      expect(await exit).toBe(0);
      expect(Date.now() - signalledAt).toBeLessThan(15_000);
      expect((await lxcLs('/var/lib/lxc')).filter((n) => n.startsWith('corral-run-drainup-'))).toEqual([]);
    } catch (err) {
      console.error('UP OUTPUT:\n' + out);
      throw err;
    } finally {
      if (up.exitCode === null) process.kill(-up.pid!, 'SIGKILL');
    }
  });

  it('a draining agent gets no new runs, finishes and reports the one it holds, and the queued job runs elsewhere', async () => {
    const cluster = await startCluster({ agents: ['drain-a'] });
    try {
      const client = await cluster.tenant('acme');
      const { job } = await client.submit({ command: 'sleep 1.5; echo finished', timeout: 30 });
      await until(async () => (await client.get(job.id)).state === 'running', 20_000, 50);
      const agent = cluster.agents.get('drain-a')!;
      const drained = agent.drain(20_000);
      const conn = () => cluster.gateway.services.hub.agents().find((a) => a.id === 'drain-a');
      await until(() => conn()?.capacity.slots === 0, 5000, 10);

      const next = await client.submit({ command: 'echo next' });
      const startedDrain = Date.now();
      await drained;
      // The drain ended when the attempt did (not at its 20 s timeout), with the result on the
      // gateway's disk: acknowledged, so the agent keeps nothing to send again.
      expect(agent.connection.unacknowledged).toBe(0);
      expect(Date.now() - startedDrain).toBeLessThan(10_000);
      const first = await client.get(job.id);
      expect(first.state).toBe('succeeded');
      expect(await client.output(job.id)).toBe('finished\n');
      expect((await client.get(next.job.id)).state).toBe('queued');
      await agent.stop();
      cluster.agents.delete('drain-a');

      await cluster.addAgent('drain-b');
      const ran = await client.until(next.job.id, 30_000);
      expect(ran.state).toBe('succeeded');
      expect(ran.attempts.map((a) => a.agent)).toEqual(['drain-b']);
    } finally {
      await cluster.stop();
    }
  });
});
