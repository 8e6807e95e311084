import { createHmac, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobView } from '../src/jobs/view.js';
import { startCluster, type Cluster } from './helpers/cluster.js';
import { runCli } from './helpers/process.js';

/**
 * Triggers fired for real: a gateway on a loopback port, an agent with real LXC containers, and
 * the compiled CLI (dist/, built by `npm test`) making the triggers. Signatures are computed here
 * with node:crypto.
 */

let cluster: Cluster;
let token: string;

beforeAll(async () => {
  cluster = await startCluster({ agents: ['trg1'] });
  await cluster.gateway.services.tenants.create('acme', {});
  token = await cluster.token({ sub: 'acme-test', tenant: 'acme', scopes: ['jobs:read', 'jobs:write', 'functions:read', 'functions:write'] });
  const res = await call('PUT', '/v1/functions/echo-hook', {
    json: { command: 'printf "event=%s delivery=%s\\n" "$CORRAL_EVENT" "$CORRAL_DELIVERY_ID"; cat', timeout: 20 },
  });
  expect(res.status, await res.clone().text()).toBe(201);
});
afterAll(async () => {
  await cluster?.stop();
});

function call(method: string, path: string, o: { body?: BodyInit; json?: unknown; headers?: Record<string, string> } = {}): Promise<Response> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, ...(o.json !== undefined && { 'content-type': 'application/json' }), ...o.headers };
  const body = o.json !== undefined ? JSON.stringify(o.json) : o.body;
  return fetch(cluster.url + path, { method, headers, ...(body !== undefined && { body }) });
}

async function finished(id: string): Promise<JobView> {
  let job = (await (await call('GET', `/v1/jobs/${id}`)).json()) as JobView;
  const deadline = Date.now() + 60_000;
  while (!['succeeded', 'failed', 'timed_out', 'cancelled'].includes(job.state) && Date.now() < deadline) {
    job = (await (await call('GET', `/v1/jobs/${id}?wait=10`)).json()) as JobView;
  }
  return job;
}

describe('a trigger fired over HTTP runs its function in a container', () => {
  it('answers GitHub deliveries with 202 in well under 100 ms (median on loopback), then runs the function with the body as stdin and the event and delivery in its env', async () => {
    const common = ['--url', cluster.url, '--token', token];
    const add = await runCli(['trigger', 'add', 'echo-hook', '--kind', 'github', ...common]);
    expect(add.code, add.stderr).toBe(0);
    const url = /^url\s+(\S+)$/m.exec(add.stdout)![1]!;
    const secret = /^secret\s+(\S+)$/m.exec(add.stdout)![1]!;
    const id = /^id\s+(\S+)$/m.exec(add.stdout)![1]!;
    expect(url).toBe(`${cluster.url}/hooks/${id}`);
    expect(secret).toMatch(/^[0-9a-f]{64}$/);
    expect(add.stderr).toMatch(/not shown again/);

    const ls = await runCli(['trigger', 'ls', 'echo-hook', ...common]);
    expect(ls.stdout).toMatch(new RegExp(`^${id}\\s+github\\s+`, 'm'));
    expect(ls.stdout).not.toContain(secret);

    const body = JSON.stringify({ ref: 'refs/heads/main', head_commit: { message: 'fix: ünïcode & "quotes"' } });
    const delivery = randomUUID();
    const headers = {
      'content-type': 'application/json',
      'x-github-event': 'push',
      'x-github-delivery': delivery,
      'x-hub-signature-256': 'sha256=' + createHmac('sha256', secret).update(body).digest('hex'),
    };
    const res = await fetch(url, { method: 'POST', headers, body });
    expect(res.status).toBe(202);
    const { id: jobId } = (await res.json()) as { id: string };

    // The answer waits for the job to be on disk (an fsync), never for it to run: time ten more
    // fires, each a new connection as GitHub makes them, while the containers run the jobs.
    const times: number[] = [];
    for (let i = 0; i < 10; i++) {
      const b = JSON.stringify({ ping: i });
      const started = performance.now();
      const r = await fetch(url, {
        method: 'POST',
        headers: { connection: 'close', 'x-github-event': 'ping', 'x-github-delivery': randomUUID(), 'x-hub-signature-256': 'sha256=' + createHmac('sha256', secret).update(b).digest('hex') },
        body: b,
      });
      expect(r.status).toBe(202);
      await r.text();
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    expect(times[5]!, `fire times in ms: ${times.map((t) => t.toFixed(1)).join(' ')}`).toBeLessThan(100);

    // A redelivery from GitHub's settings page: same delivery id, same job.
    const again = await fetch(url, { method: 'POST', headers, body });
    expect(((await again.json()) as { id: string }).id).toBe(jobId);

    const job = await finished(jobId);
    expect(job).toMatchObject({ state: 'succeeded', function: 'echo-hook', exitCode: 0 });
    const out = await (await call('GET', `/v1/jobs/${jobId}/output?stream=stdout`)).text();
    expect(out).toBe(`event=push delivery=${delivery}\n${body}`);

    const wrong = await fetch(url, { method: 'POST', headers: { ...headers, 'x-github-delivery': randomUUID(), 'x-hub-signature-256': 'sha256=' + '0'.repeat(64) }, body });
    expect(wrong.status).toBe(401);

    const rotated = await runCli(['trigger', 'rotate', 'echo-hook', id, ...common]);
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(/^secret\s+(\S+)$/m.exec(rotated.stdout)![1]).not.toBe(secret);
    expect(rotated.stderr).toMatch(/previous secret still verifies until \d{4}-/);
    const rm = await runCli(['trigger', 'rm', 'echo-hook', id, ...common]);
    expect(rm.code, rm.stderr).toBe(0);
    expect((await fetch(url, { method: 'POST', headers: { ...headers, 'x-github-delivery': randomUUID() }, body })).status).toBe(401);
  });

  it('runs a Standard Webhooks delivery with the JSON type as CORRAL_EVENT', async () => {
    const res = await call('POST', '/v1/functions/echo-hook/triggers', { json: {} });
    const t = (await res.json()) as { url: string; secret: string };
    const body = '{"type":"invoice.paid","amount":5}';
    const msgId = `msg_${randomUUID()}`;
    const ts = Math.floor(Date.now() / 1000);
    const key = Buffer.from(t.secret.slice('whsec_'.length), 'base64');
    const signature = 'v1,' + createHmac('sha256', key).update(`${msgId}.${ts}.${body}`).digest('base64');
    const fired = await fetch(t.url, { method: 'POST', headers: { 'content-type': 'application/json', 'webhook-id': msgId, 'webhook-timestamp': String(ts), 'webhook-signature': signature }, body });
    expect(fired.status).toBe(202);
    const job = await finished(((await fired.json()) as { id: string }).id);
    expect(job.state).toBe('succeeded');
    expect(await (await call('GET', `/v1/jobs/${job.id}/output?stream=stdout`)).text()).toBe(`event=invoice.paid delivery=${msgId}\n${body}`);
  });
});
