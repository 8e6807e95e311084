import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lxcLs } from '../agent/lxc/lxc.js';
import { startCluster, until, type Client, type Cluster } from './helpers/cluster.js';
import { runCli } from './helpers/process.js';

let cluster: Cluster;

/** Host pids of processes whose command line is `cmd`, run by a job (a tenant's range: from uid 1065536 up). */
function sleepers(cmd: string): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ').trim() === cmd && statSync(`/proc/${p}`).uid >= 1_065_536;
      } catch {
        return false;
      }
    })
    .map(Number);
}
let acme: Client;
let rival: Client;

beforeAll(async () => {
  cluster = await startCluster({ agents: ['ct1'] });
  acme = await cluster.tenant('acme');
  rival = await cluster.tenant('rival');
});
afterAll(async () => {
  await cluster?.stop();
});

describe('jobs run in real LXC containers', () => {
  it('captures stdout and stderr separately and reports exit codes', async () => {
    const ok = await acme.submit({ command: 'echo out; echo err >&2' }, 30);
    expect(ok.status).toBe(200);
    expect(ok.job).toMatchObject({ state: 'succeeded', exitCode: 0, reason: 'exit' });
    expect(await acme.output(ok.job.id, 'stdout')).toBe('out\n');
    expect(await acme.output(ok.job.id, 'stderr')).toBe('err\n');
    // A job this short reports its start along with its end; the attempt still records both.
    const [a] = ok.job.attempts;
    expect(a!.container).toMatch(/^corral-run-/);
    expect(Date.parse(a!.startedAt!)).toBeLessThanOrEqual(Date.parse(a!.endedAt!));
    expect(ok.job.startedAt).not.toBeNull();
    const bad = await acme.submit({ command: ['/bin/sh', '-c', 'exit 7'] }, 30);
    expect(bad.job).toMatchObject({ state: 'failed', exitCode: 7, reason: 'exit' });
    const missing = await acme.submit({ command: ['/no/such/program'] }, 30);
    expect(missing.job).toMatchObject({ state: 'failed', exitCode: 127 });
  });

  it('passes env and stdin, and an argv array reaches the program unquoted', async () => {
    const r = await acme.submit({ command: ['/bin/sh', '-c', 'echo "$GREETING"; cat; echo "$0|$1"', 'a b', 'c d'], env: { GREETING: 'hello there' }, stdin: 'from stdin\n' }, 30);
    expect(await acme.output(r.job.id)).toBe('hello there\nfrom stdin\na b|c d\n');
  });

  it('kills sleep 100 at its timeout, promptly, and ends timed_out', async () => {
    const started = Date.now();
    const r = await acme.submit({ command: 'sleep 100', timeout: 1 }, 30);
    expect(Date.now() - started).toBeLessThan(6000);
    expect(r.job).toMatchObject({ state: 'timed_out', reason: 'timeout', signal: 'SIGTERM' });
    expect(r.job.attempts[0]!.reason).toBe('timeout');
  });

  it('a process that ignores TERM is killed after the grace period', async () => {
    const started = Date.now();
    const r = await acme.submit({ command: "trap '' TERM; while true; do sleep 0.1; done", timeout: 1 }, 30);
    expect(r.job).toMatchObject({ state: 'timed_out', signal: 'SIGKILL' });
    expect(Date.now() - started).toBeLessThan(6000);
  });

  it('retries: exit 3 with retries 2 makes three attempts, then fails', async () => {
    const { job } = await acme.submit({ command: 'exit 3', retries: 2 });
    const done = await acme.until(job.id);
    expect(done.state).toBe('failed');
    expect(done.attempts.map((a) => [a.n, a.exitCode, a.reason])).toEqual([
      [1, 3, 'exit'],
      [2, 3, 'exit'],
      [3, 3, 'exit'],
    ]);
  });

  it('a memory hog ends oom, with peak memory at the limit', async () => {
    const r = await acme.submit({ command: 'x=$(head -c 100000000 /dev/zero | tr "\\0" a); echo ${#x}', memory: '32M' }, 30);
    expect(r.job).toMatchObject({ state: 'failed', reason: 'oom' });
    const peak = r.job.attempts[0]!.peakMemoryBytes!;
    expect(peak).toBeGreaterThan(16 * 1024 * 1024);
    expect(peak).toBeLessThanOrEqual(32 * 1024 * 1024);
  });

  it('a fork bomb is contained by the pids limit and the agent keeps working', async () => {
    const r = await acme.submit({ command: 'bomb() { bomb | bomb & }; bomb; sleep 2; echo survived', timeout: 5 }, 30);
    expect(['failed', 'timed_out', 'succeeded']).toContain(r.job.state);
    const after = await acme.submit({ command: 'echo still fine' }, 30);
    expect(after.job.state).toBe('succeeded');
    expect(await acme.output(after.job.id)).toBe('still fine\n');
  });

  it('holds a CPU limit: CPU-seconds ÷ wall time is about the limit', async () => {
    const r = await acme.submit({ command: 'end=$(($(date +%s) + 3)); while [ $(date +%s) -lt $end ]; do :; done', cpu: 0.25, timeout: 20 }, 30);
    const a = r.job.attempts[0]!;
    const wall = (Date.parse(a.endedAt!) - Date.parse(a.startedAt!)) / 1000;
    const ratio = a.cpuSeconds! / wall;
    expect(ratio).toBeGreaterThan(0.15);
    expect(ratio).toBeLessThan(0.4);
  });

  it('reuses a warm container for the same tenant only: /tmp carries over for acme, never to rival', async () => {
    const first = await acme.submit({ command: 'echo secret > /tmp/mark; echo written' }, 30);
    expect(first.job.state).toBe('succeeded');
    const container = first.job.attempts[0]!.container;
    const again = await acme.submit({ command: 'cat /tmp/mark' }, 30);
    expect(again.job.attempts[0]!.container).toBe(container);
    expect(await acme.output(again.job.id)).toBe('secret\n');
    const other = await rival.submit({ command: 'cat /tmp/mark 2>/dev/null || echo none' }, 30);
    expect(other.job.attempts[0]!.container).not.toBe(container);
    expect(await rival.output(other.job.id)).toBe('none\n');
  });

  it('fresh: true gets a new container without the tenant’s leftovers', async () => {
    await acme.submit({ command: 'echo x > /tmp/fresh-mark' }, 30);
    const r = await acme.submit({ command: 'cat /tmp/fresh-mark 2>/dev/null || echo clean', fresh: true }, 30);
    expect(await acme.output(r.job.id)).toBe('clean\n');
  });

  it('cancel stops a running job and its whole process tree', async () => {
    const { job } = await acme.submit({ command: 'sleep 100 & sleep 100 & sleep 100', timeout: 120 });
    await until(async () => (await acme.get(job.id)).startedAt !== null, 20_000);
    await until(() => sleepers('sleep 100').length === 3, 5000);
    const started = Date.now();
    const res = await acme.request('POST', `/v1/jobs/${job.id}/cancel`);
    expect(res.status).toBe(202);
    const done = await acme.until(job.id, 20_000);
    expect(done).toMatchObject({ state: 'cancelled' });
    expect(Date.now() - started).toBeLessThan(5000);
    await until(() => sleepers('sleep 100').length === 0, 5000);
  });

  it('delete of a running job stops it on its agent, frees the slot and removes it', async () => {
    const { job } = await acme.submit({ command: 'sleep 101 & sleep 101', timeout: 120 });
    await until(async () => (await acme.get(job.id)).startedAt !== null, 20_000);
    await until(() => sleepers('sleep 101').length === 2, 5000);
    const res = await acme.request('DELETE', `/v1/jobs/${job.id}`);
    expect(res.status).toBe(204);
    expect((await acme.request('GET', `/v1/jobs/${job.id}`)).status).toBe(404);
    await until(() => sleepers('sleep 101').length === 0 && cluster.agents.get('ct1')!.runner.size === 0, 5000);
  });

  it('a job runs as uid 1000 in its tenant\'s own host id range, not the images\' and not another tenant\'s', async () => {
    const cmd = 'id -u; cat /proc/self/uid_map; touch /root/owned 2>/dev/null || echo denied; echo x > /tmp/owned';
    const a = await acme.submit({ command: cmd, fresh: true }, 30);
    const b = await rival.submit({ command: cmd, fresh: true }, 30);
    const ranges = [];
    for (const [client, r] of [[acme, a], [rival, b]] as const) {
      const m = /^1000\n\s+0\s+(\d+)\s+65536\ndenied\n$/.exec(await client.output(r.job.id));
      expect(m).not.toBeNull();
      const base = Number(m![1]);
      const file = join('/var/lib/lxc', r.job.attempts[0]!.container!, 'overlay', 'delta', 'tmp', 'owned');
      expect(statSync(file).uid).toBe(base + 1000);
      ranges.push(base);
    }
    expect(ranges[0]).not.toBe(1_000_000);
    expect(ranges[1]).not.toBe(1_000_000);
    expect(ranges[0]).not.toBe(ranges[1]);
  });

  it('bounds what a job can write to its container', async () => {
    const r = await acme.submit({ command: 'dd if=/dev/zero of=/tmp/big bs=1M count=400 2>&1; rm -f /tmp/big', memory: '900M', fresh: true }, 60);
    expect(await acme.output(r.job.id)).toMatch(/No space left on device/);
  });

  it('corral run streams the output and exits with the job’s exit code', async () => {
    const r = await runCli(['run', '--url', cluster.url, '--token', acme.token, '--', 'echo to-out; echo to-err >&2; exit 3']);
    expect(r.code).toBe(3);
    expect(r.stdout).toBe('to-out\n');
    expect(r.stderr).toMatch(/to-err/);
    const ok = await runCli(['run', '--url', cluster.url, '--token', acme.token, '--', '/bin/echo', 'two words']);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toBe('two words\n');
    const timeout = await runCli(['run', '--url', cluster.url, '--token', acme.token, '--timeout', '1', '--', 'sleep 30']);
    expect(timeout.code).toBe(124);
  });

  it('has no network interface but lo', async () => {
    const r = await acme.submit({ command: 'ls /sys/class/net' }, 30);
    expect(await acme.output(r.job.id)).toBe('lo\n');
    const refused = await acme.submit({ command: 'true', network: true });
    expect(refused.status).toBe(422);
  });

  it('streams output live while the job runs', async () => {
    const { job } = await acme.submit({ command: 'echo first; sleep 1.5; echo second' });
    const res = await acme.request('GET', `/v1/jobs/${job.id}/output?follow=1`);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    while (!text.includes('data: first')) text += decoder.decode((await reader.read()).value);
    // "first" arrived while the job was still running.
    expect((await acme.get(job.id)).state).toBe('running');
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value);
    }
    expect(text).toMatch(/data: second/);
    expect(text).toMatch(/event: end/);
  });

  it('sleep 10 && echo hi with a 5 s timeout and 4 tries: four timed-out attempts, never "hi"', async () => {
    const { job } = await acme.submit({ command: 'sleep 10 && echo hi', timeout: 5, retries: 3 });
    const done = await acme.until(job.id, 60_000);
    expect(done.state).toBe('timed_out');
    expect(done.attempts.map((a) => a.reason)).toEqual(['timeout', 'timeout', 'timeout', 'timeout']);
    // Each timed-out attempt's container was recycled, never reused.
    expect(new Set(done.attempts.map((a) => a.container)).size).toBe(4);
    expect(await acme.output(job.id)).toBe('');
  });

  it('shows the pool, with the tenant’s warm container, in GET /v1/agents', async () => {
    await acme.submit({ command: 'true' }, 30);
    const admin = cluster.gateway.services;
    const token = await (await import('../src/auth/tokens.js')).mintToken({ secret: admin.secret, issuer: 'corral', audience: 'corral', sub: 'admin', scopes: ['admin'], ttlSeconds: 60 });
    let body: { agents: Array<{ id: string; pool: { containers: number; warm: Array<{ tenant: string; image: string; idle: number }> } }> } = { agents: [] };
    await until(async () => {
      body = await (await fetch(`${cluster.url}/v1/agents`, { headers: { authorization: `Bearer ${token}` } })).json();
      return body.agents[0]?.pool.warm.some((w) => w.tenant === 'acme' && w.image === 'busybox' && w.idle > 0) ?? false;
    }, 5000, 100);
    expect(body.agents[0]!.id).toBe('ct1');
    expect(body.agents[0]!.pool.containers).toBeGreaterThan(0);
  });
});

describe('no container leaks', () => {
  it('after the agents stop, lxc-ls shows only images', async () => {
    await cluster.stop();
    const left = (await lxcLs('/var/lib/lxc')).filter((n) => n.startsWith('corral-run-ct1-'));
    expect(left).toEqual([]);
    cluster = undefined as unknown as Cluster;
  });
});
