import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobView } from '../src/jobs/view.js';
import { startCluster, type Cluster } from './helpers/cluster.js';
import { runCli } from './helpers/process.js';

/**
 * Functions run for real: invoke through a gateway to an agent with real LXC containers. The CLI
 * case runs the compiled CLI in dist/, as production does (`npm test` builds it first).
 */

let cluster: Cluster;
let token: string;

beforeAll(async () => {
  cluster = await startCluster({ agents: ['fn1'] });
  await cluster.gateway.services.tenants.create('acme', {});
  token = await cluster.token({ sub: 'acme-test', tenant: 'acme', scopes: ['jobs:read', 'jobs:write', 'functions:read', 'functions:write'] });
});
afterAll(async () => {
  await cluster?.stop();
});

function call(method: string, path: string, o: { body?: BodyInit; json?: unknown; headers?: Record<string, string> } = {}): Promise<Response> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, ...(o.json !== undefined && { 'content-type': 'application/json' }), ...o.headers };
  const body = o.json !== undefined ? JSON.stringify(o.json) : o.body;
  return fetch(cluster.url + path, { method, headers, ...(body !== undefined && { body }) });
}

async function deploy(name: string, fn: Record<string, unknown>): Promise<void> {
  const res = await call('PUT', `/v1/functions/${name}`, { json: fn });
  expect(res.status, await res.clone().text()).toBeLessThan(300);
}

async function job(id: string, wait = 0): Promise<JobView> {
  return (await (await call('GET', `/v1/jobs/${id}${wait ? `?wait=${wait}` : ''}`)).json()) as JobView;
}

describe('synchronous invoke', () => {
  it("answers 200 with the function's stdout as the body, its content type and the Corral-* headers", async () => {
    await deploy('upper', { command: 'tr a-z A-Z', timeout: 20 });
    const res = await call('POST', '/v1/functions/upper/invoke?wait=30', { body: 'hello, function\n', headers: { 'content-type': 'text/plain' } });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('HELLO, FUNCTION\n');
    expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(res.headers.get('corral-job-id')).toMatch(/^job_[0-9A-Z]{26}$/);
    expect(res.headers.get('corral-state')).toBe('succeeded');
    expect(res.headers.get('corral-exit-code')).toBe('0');
    const ran = await job(res.headers.get('corral-job-id')!);
    expect(ran).toMatchObject({ function: 'upper', functionVersion: 1, state: 'succeeded' });

    await deploy('json-out', { command: `echo '{"ok":true}'`, contentType: 'application/json' });
    const js = await call('POST', '/v1/functions/json-out/invoke?wait=30');
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toBe('application/json');
    expect(await js.json()).toEqual({ ok: true });
  });

  it('passes all 256 byte values through `cat` in a container and back, byte for byte', async () => {
    await deploy('cat', { command: ['cat'], contentType: 'application/octet-stream' });
    const input = Buffer.concat([Buffer.from(Array.from({ length: 256 }, (_, i) => i)), randomBytes(64 * 1024), Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i))]);
    const res = await call('POST', '/v1/functions/cat/invoke?wait=30', { body: input, headers: { 'content-type': 'application/octet-stream' } });
    expect(res.status).toBe(200);
    const out = Buffer.from(await res.arrayBuffer());
    expect(out.length).toBe(input.length);
    expect(out.equals(input)).toBe(true);
  });

  it('sets CORRAL_CONTENT_TYPE, CORRAL_QUERY without corral’s own parameters, and CORRAL_JOB_ID in the env', async () => {
    await deploy('env', { command: 'printf "%s|%s|%s|%s" "$CORRAL_CONTENT_TYPE" "$CORRAL_QUERY" "$CORRAL_JOB_ID" "$OWN"', env: { OWN: 'mine' } });
    const res = await call('POST', '/v1/functions/env/invoke?size=10&wait=30&name=a%20b&timeout=20', { body: '{}', headers: { 'content-type': 'application/json; charset=utf-8' } });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(`application/json; charset=utf-8|size=10&name=a%20b|${res.headers.get('corral-job-id')}|mine`);
  });

  it('answers 502 problem+json with the state, exit code and the tail of stderr when the function fails', async () => {
    await deploy('fails', { command: 'echo partial; head -c 10000 /dev/zero | tr "\\0" x >&2; echo " the real error" >&2; exit 3' });
    const res = await call('POST', '/v1/functions/fails/invoke?wait=30');
    expect(res.status).toBe(502);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    expect(res.headers.get('corral-state')).toBe('failed');
    expect(res.headers.get('corral-exit-code')).toBe('3');
    const p = await res.json();
    expect(p).toMatchObject({ type: '/problems/function_failed', status: 502, state: 'failed', exitCode: 3, reason: 'exit', jobId: res.headers.get('corral-job-id'), stderrTruncated: true });
    expect(p.detail).toMatch(/exit code 3/);
    expect(p.stderr.endsWith('x the real error\n')).toBe(true);
    expect(Buffer.byteLength(p.stderr)).toBe(4096);
  });

  it('with Accept: application/json answers the job with stdout and stderr inline', async () => {
    await deploy('both', { command: 'echo to-out; echo to-err >&2; exit 4' });
    const res = await call('POST', '/v1/functions/both/invoke?wait=30', { headers: { accept: 'application/json' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await res.json()).toMatchObject({ function: 'both', state: 'failed', exitCode: 4, stdout: 'to-out\n', stderr: 'to-err\n', stdoutTruncated: false, stderrTruncated: false });
  });

  it('answers 202 with a Location when the job outlives the wait, and the job then runs to its end', async () => {
    await deploy('slow', { command: 'sleep 3; echo late' });
    const started = Date.now();
    const res = await call('POST', '/v1/functions/slow/invoke?wait=1');
    expect(res.status).toBe(202);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    const body = (await res.json()) as JobView;
    expect(res.headers.get('location')).toBe(`/v1/jobs/${body.id}`);
    expect(['queued', 'running']).toContain(body.state);
    expect(await job(body.id, 30)).toMatchObject({ state: 'succeeded' });
  });

  it('a per-call timeout below the function’s ends a long job timed_out (502)', async () => {
    await deploy('sleepy', { command: 'sleep 30', timeout: 30 });
    const res = await call('POST', '/v1/functions/sleepy/invoke?wait=30&timeout=1');
    expect(res.status).toBe(502);
    expect(await res.json()).toMatchObject({ state: 'timed_out', reason: 'timeout' });
  });
});

describe('reserved concurrency', () => {
  it('never runs more of a function’s jobs at once than its maxConcurrent, while other jobs of the tenant run beside them', async () => {
    await deploy('one-at-a-time', { command: 'sleep 1', maxConcurrent: 1 });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(((await (await call('POST', '/v1/functions/one-at-a-time/invoke')).json()) as JobView).id);
    const adhoc = ((await (await call('POST', '/v1/jobs', { json: { command: 'sleep 1' } })).json()) as JobView).id;
    const ended = await Promise.all([...ids, adhoc].map(async (id) => {
      let j = await job(id, 30);
      while (!['succeeded', 'failed', 'timed_out', 'cancelled'].includes(j.state)) j = await job(id, 30);
      return j;
    }));
    for (const j of ended) expect(j.state).toBe('succeeded');
    const spans = ended.slice(0, 3).map((j) => ({ start: Date.parse(j.attempts[0]!.startedAt!), end: Date.parse(j.attempts[0]!.endedAt!) })).sort((a, b) => a.start - b.start);
    for (let i = 1; i < spans.length; i++) expect(spans[i]!.start).toBeGreaterThanOrEqual(spans[i - 1]!.end);
    // The agent has 4 slots: the ad-hoc job did not queue behind the function's backlog.
    const other = Date.parse(ended[3]!.attempts[0]!.startedAt!);
    expect(other).toBeLessThan(spans[1]!.start);
  });
});

describe('corral fn (the compiled CLI)', () => {
  it('deploys, lists, shows, invokes with stdin and exit codes passed through, and removes', async () => {
    const common = ['--url', cluster.url, '--token', token];
    const dep = await runCli(['fn', 'deploy', 'rev', ...common, '--timeout', '20', '--memory', '64M', '--env', 'SUFFIX=!,?', '--env', 'OTHER=x=y', '--', 'cat; printf "$SUFFIX"; echo warn >&2']);
    expect(dep, dep.stderr).toMatchObject({ code: 0 });
    expect(dep.stdout).toMatch(/created rev version 1/);

    const ls = await runCli(['fn', 'ls', ...common]);
    expect(ls.code).toBe(0);
    expect(ls.stdout).toMatch(/^NAME\s+VERSION\s+IMAGE\s+COMMAND$/m);
    expect(ls.stdout).toMatch(/^rev\s+1\s+busybox\s+cat; printf/m);
    const lsJson = JSON.parse((await runCli(['fn', 'ls', ...common, '--json'])).stdout);
    expect(lsJson.map((f: { name: string }) => f.name)).toContain('rev');

    const got = JSON.parse((await runCli(['fn', 'get', 'rev', ...common, '--json'])).stdout);
    expect(got).toMatchObject({ name: 'rev', version: 1, timeout: 20, memory: 64 * 1024 ** 2, env: { SUFFIX: '!,?', OTHER: 'x=y' } });
    expect((await runCli(['fn', 'get', 'rev', ...common])).stdout).toMatch(/^timeout: 20$/m);

    const inv = await runCli(['fn', 'invoke', 'rev', ...common, '--wait', '30'], {}, Buffer.from([0, 1, 2, 255, 10]));
    expect(inv.code, inv.stderr).toBe(0);
    expect(inv.stdoutBytes.equals(Buffer.concat([Buffer.from([0, 1, 2, 255, 10]), Buffer.from('!,?')]))).toBe(true);
    expect(inv.stderr).toBe('warn\n');

    const redeploy = await runCli(['fn', 'deploy', 'rev', ...common, '--', 'echo failing; echo why >&2; exit 7']);
    expect(redeploy.stdout).toMatch(/saved rev version 2/);
    const bad = await runCli(['fn', 'invoke', 'rev', ...common], {}, Buffer.alloc(0));
    expect(bad.code).toBe(7);
    expect(bad.stdout).toBe('failing\n');
    expect(bad.stderr).toMatch(/^why\n/);

    await runCli(['fn', 'deploy', 'nap', ...common, '--timeout', '1', '--', 'sleep 10']);
    expect((await runCli(['fn', 'invoke', 'nap', ...common], {}, Buffer.alloc(0))).code).toBe(124);

    const async = await runCli(['fn', 'invoke', 'rev', ...common, '--wait', '0'], {}, Buffer.from('x'));
    expect(async.code).toBe(0);
    expect(async.stdout).toMatch(/^job_[0-9A-Z]{26}\n$/);

    const rm = await runCli(['fn', 'rm', 'rev', ...common]);
    expect(rm).toMatchObject({ code: 0, stdout: 'removed rev\n' });
    const missing = await runCli(['fn', 'get', 'rev', ...common]);
    expect(missing.code).toBe(125);
    expect(missing.stderr).toMatch(/404/);
    const usage = await runCli(['fn', 'frobnicate', ...common]);
    expect(usage.code).toBe(2);
  });
});
