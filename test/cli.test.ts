import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, until, type Client, type Cluster } from './helpers/cluster.js';
import { CLI, ROOT, runCli } from './helpers/process.js';

/** Bytes a terminal acts on: C0 controls but newline, DEL, C1 controls, and bidi overrides. */
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

describe('the corral CLI against a real gateway and agent', () => {
  let cluster: Cluster;
  let client: Client;
  let env: Record<string, string>;

  beforeAll(async () => {
    cluster = await startCluster();
    client = await cluster.tenant('clitest');
    env = { CORRAL_URL: cluster.url, CORRAL_TOKEN: client.token };
  });
  afterAll(async () => cluster?.stop());

  it('prints the package version with --version', async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = await runCli(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`corral ${pkg.version}\n`);
  });

  it('documents its exit codes and where the URL and token come from in --help', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    for (const code of ['0 ', '2 ', '124', '125', '128+N']) expect(r.stdout).toContain(code);
    expect(r.stdout).toMatch(/CORRAL_URL/);
    expect(r.stdout).toMatch(/default\.token/);
  });

  it('jobs ls --json and jobs get --json print the gateway\'s answers, with filters and paging', async () => {
    const a = await client.submit({ command: 'echo a', name: 'cli-a' }, 30);
    const b = await client.submit({ command: 'exit 4', name: 'cli-b' }, 30);
    expect(a.job.state).toBe('succeeded');
    expect(b.job.state).toBe('failed');

    const [all, failedOnly, firstPage, byName] = await Promise.all([
      runCli(['jobs', 'ls', '--json'], env),
      runCli(['jobs', 'ls', '--json', '--state', 'failed'], env),
      runCli(['jobs', 'ls', '--json', '--limit', '1'], env),
      runCli(['jobs', 'get', 'cli-b', '--json'], env),
    ]);
    expect(all.code).toBe(0);
    const page = JSON.parse(all.stdout) as { jobs: Array<{ id: string; state: string }>; nextCursor: string | null };
    expect(page.jobs.map((j) => j.id)).toEqual(expect.arrayContaining([a.job.id, b.job.id]));

    const failed = JSON.parse(failedOnly.stdout) as typeof page;
    expect(failed.jobs.map((j) => j.id)).toContain(b.job.id);
    expect(failed.jobs.every((j) => j.state === 'failed')).toBe(true);

    const first = JSON.parse(firstPage.stdout) as typeof page;
    expect(first.jobs).toHaveLength(1);
    expect(first.nextCursor).toBe(first.jobs[0]!.id);
    const next = JSON.parse((await runCli(['jobs', 'ls', '--json', '--limit', '1', '--cursor', first.nextCursor!], env)).stdout) as typeof page;
    expect(next.jobs[0]!.id).not.toBe(first.jobs[0]!.id);

    expect(byName.code).toBe(0);
    const job = JSON.parse(byName.stdout) as { id: string; exitCode: number; attempts: unknown[] };
    expect(job).toMatchObject({ id: b.job.id, exitCode: 4 });
    expect(job.attempts).toHaveLength(1);
  });

  it('jobs ls --name-prefix lists the jobs whose name starts with it in name order, wildcards and Unicode taken literally', async () => {
    for (const name of ['запуск-α1', 'запуск-α2', 'запуск_β', 'запускα']) expect((await client.submit({ command: 'true', name })).status).toBe(202);
    const names = async (prefix: string) => {
      const r = await runCli(['jobs', 'ls', '--json', '--name-prefix', prefix], env);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { jobs: Array<{ name: string }> }).jobs.map((j) => j.name);
    };
    expect(await names('запуск-α')).toEqual(['запуск-α1', 'запуск-α2']);
    expect(await names('запуск_')).toEqual(['запуск_β']);
    const table = await runCli(['jobs', 'ls', '--name-prefix', 'запуск-'], env);
    expect(table.stdout.trimEnd().split('\n').slice(1).map((l) => l.split(/\s{2,}/)[1])).toEqual(['запуск-α1', 'запуск-α2']);
  });

  it('prints aligned tables in which a hostile name and command cannot reach the terminal raw', async () => {
    const name = 'report\u202Etxt.exe';
    const command = "printf 'x' # \u001b]0;pwned\u0007\u001b[2J\u009b31m";
    const { job } = await client.submit({ command, name }, 30);
    expect(job.state).toBe('succeeded');

    const ls = await runCli(['jobs', 'ls'], env);
    expect(ls.code).toBe(0);
    expect(ls.stdout).not.toMatch(RAW_CONTROL);
    expect(ls.stdout).toContain('report\\u202etxt.exe');
    expect(ls.stdout).toContain('\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m');
    // Columns line up: STATE starts at the same offset on the header and on every row.
    const lines = ls.stdout.trimEnd().split('\n');
    const at = lines[0]!.indexOf('STATE');
    for (const line of lines.slice(1)) expect(line.slice(at)).toMatch(/^(succeeded|failed|queued|running|timed_out|cancelled) /);

    const get = await runCli(['jobs', 'get', job.id], env);
    expect(get.code).toBe(0);
    expect(get.stdout).not.toMatch(RAW_CONTROL);
    expect(get.stdout).toContain(`id: ${job.id}`);
    expect(get.stdout).toMatch(/^ATTEMPT\s+AGENT/m);
  });

  it('logs -f streams output while the job runs, stdout and stderr apart, and exits with its code', async () => {
    const { job } = await client.submit({ command: 'echo one; sleep 1.5; echo two >&2; exit 3' });
    const child = spawn(process.execPath, [CLI, 'logs', job.id, '-f'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let stateAtFirstLine: string | undefined;
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stateAtFirstLine === undefined) void client.get(job.id).then((j) => (stateAtFirstLine ??= j.state));
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(3);
    expect(stdout).toBe('one\n');
    expect(stderr).toContain('two\n');
    expect(stderr).toContain(`job ${job.id} failed`);
    // The first line arrived while the job was still running: followed live, not read at the end.
    await until(() => stateAtFirstLine !== undefined, 5000);
    expect(stateAtFirstLine).toBe('running');
  });

  it('logs without -f writes the stored stdout and stderr to ours; --stream picks one', async () => {
    const { job } = await client.submit({ command: 'echo out; echo err >&2', name: 'cli-logs' }, 30);
    const both = await runCli(['logs', 'cli-logs'], env);
    expect(both).toMatchObject({ code: 0, stdout: 'out\n', stderr: 'err\n' });
    const errOnly = await runCli(['logs', job.id, '--stream', 'stderr'], env);
    expect(errOnly).toMatchObject({ code: 0, stdout: '', stderr: 'err\n' });
  });

  it('cancel stops a running job, rm deletes it, and an unknown job then exits 125', async () => {
    const { job } = await client.submit({ command: 'sleep 30', timeout: 60 });
    await until(async () => (await client.get(job.id)).state === 'running', 20_000, 50);
    const cancel = await runCli(['cancel', job.id], env);
    expect(cancel.code).toBe(0);
    expect(cancel.stdout).toMatch(new RegExp(`^${job.id} (running|cancelled)\\n$`));
    expect((await client.until(job.id, 20_000)).state).toBe('cancelled');

    const rm = await runCli(['rm', job.id], env);
    expect(rm).toMatchObject({ code: 0, stdout: `removed ${job.id}\n` });
    const gone = await runCli(['jobs', 'get', job.id], env);
    expect(gone.code).toBe(125);
    expect(gone.stderr).toMatch(/404/);
  });

  it('exits 2 on a usage error, 125 on a bad token or an unreachable gateway', async () => {
    const [badState, badVerb, noJob, badToken, down] = await Promise.all([
      runCli(['jobs', 'ls', '--state', 'sleeping'], env),
      runCli(['jobs', 'frob'], env),
      runCli(['logs'], env),
      runCli(['jobs', 'ls'], { ...env, CORRAL_TOKEN: 'not-a-token' }),
      runCli(['jobs', 'ls'], { ...env, CORRAL_URL: 'http://127.0.0.1:9' }),
    ]);
    expect([badState.code, badVerb.code, noJob.code]).toEqual([2, 2, 2]);
    expect(badToken.code).toBe(125);
    expect(badToken.stderr).toMatch(/401/);
    expect(down.code).toBe(125);
    expect(down.stderr).toMatch(/cannot reach the gateway/);
  });
});
