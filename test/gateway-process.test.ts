import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, killed, runCli, startCli } from './helpers/process.js';

async function api(base: string, token: string, method: string, path: string, body?: unknown) {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

describe('the corral gateway process', () => {
  it('prints an admin token on first start, writes it 0600, and mints tenant tokens that work', async () => {
    const data = mkdtempSync(join(tmpdir(), 'corral-gw-'));
    const port = await freePort();
    const env = { CORRAL_DATA: data, CORRAL_PORT: String(port) };
    const { child, output } = await startCli(['gateway'], env, /\(mode 0600\):\s+\S+\n/);
    try {
      const admin = readFileSync(join(data, 'admin.token'), 'utf8').trim();
      expect(output()).toContain(admin);
      expect(statSync(join(data, 'admin.token')).mode & 0o777).toBe(0o600);
      expect(statSync(join(data, 'jwt.secret')).mode & 0o777).toBe(0o600);
      const base = `http://127.0.0.1:${port}`;
      expect((await api(base, admin, 'POST', '/v1/tenants', { id: 'acme' })).status).toBe(201);
      const minted = await runCli(['token', '--tenant', 'acme', '--scope', 'jobs:read jobs:write', '--ttl', '1h'], env);
      expect(minted.code).toBe(0);
      const r = await api(base, minted.stdout.trim(), 'POST', '/v1/jobs', { command: 'echo hi' });
      expect(r.status).toBe(202);
    } finally {
      await killed(child, 'SIGTERM');
    }
    // A second start prints no new token and keeps the old one valid.
    const again = await startCli(['gateway'], env, /gateway listening/);
    try {
      expect(again.output()).not.toContain('First start');
    } finally {
      await killed(again.child, 'SIGTERM');
    }
  });

  it('a job answered 202 survives kill -9 of the gateway the next instant', async () => {
    const data = mkdtempSync(join(tmpdir(), 'corral-kill-'));
    const port = await freePort();
    const env = { CORRAL_DATA: data, CORRAL_PORT: String(port) };
    const base = `http://127.0.0.1:${port}`;
    const first = await startCli(['gateway'], env, /gateway listening/);
    const admin = readFileSync(join(data, 'admin.token'), 'utf8').trim();
    await api(base, admin, 'POST', '/v1/tenants', { id: 'acme' });
    const token = (await runCli(['token', '--tenant', 'acme', '--scope', 'jobs:read jobs:write'], env)).stdout.trim();
    const ids: string[] = [];
    const submits = Array.from({ length: 20 }, (_, i) => api(base, token, 'POST', '/v1/jobs', { command: `echo ${i}`, name: `n${i}` }));
    for (const r of await Promise.all(submits)) {
      expect(r.status).toBe(202);
      ids.push(r.body.id);
    }
    await killed(first.child, 'SIGKILL');
    const second = await startCli(['gateway'], env, /gateway listening/);
    try {
      for (const id of ids) {
        const r = await api(base, token, 'GET', `/v1/jobs/${id}`);
        expect(r.status).toBe(200);
        expect(r.body.state).toBe('queued');
      }
    } finally {
      await killed(second.child, 'SIGTERM');
    }
  });

  it('rejects a bad setting with a message naming it', async () => {
    const r = await runCli(['gateway'], { CORRAL_PORT: 'eighty', CORRAL_DATA: mkdtempSync(join(tmpdir(), 'corral-bad-')) });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/CORRAL_PORT/);
    const s = await runCli(['gateway'], { CORRAL_JWT_SECRET: 'short', CORRAL_DATA: mkdtempSync(join(tmpdir(), 'corral-bad-')) });
    expect(s.code).toBe(2);
    expect(s.stderr).toMatch(/CORRAL_JWT_SECRET/);
  });

  it('takes every setting as a flag, multi-word ones too, and refuses an unknown flag', async () => {
    const data = mkdtempSync(join(tmpdir(), 'corral-flags-'));
    const port = await freePort();
    const flags = ['--data', data, '--port', String(port), '--body-limit', '2048', '--lease-ms', '4000', '--log-level', 'warn', '--default-images', 'busybox'];
    const gw = await startCli(['gateway', ...flags], {}, /\(mode 0600\)/);
    try {
      const admin = readFileSync(join(data, 'admin.token'), 'utf8').trim();
      expect((await api(`http://127.0.0.1:${port}`, admin, 'POST', '/v1/tenants', { id: 'x'.repeat(3000) })).status).toBe(413);
    } finally {
      await killed(gw.child, 'SIGTERM');
    }
    const bad = await runCli(['gateway', '--data', data, '--lease-msec', '4000']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/unknown flag --lease-msec/);
  });

  it('answers --help', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/corral gateway/);
    expect((await runCli(['token', '--help'])).stdout).toMatch(/--tenant/);
  });
});

describe('corral up (the README’s first command)', () => {
  it('starts a gateway with a local agent; corral run runs a first job; stopping leaves no container', async () => {
    const { lxcLs } = await import('../agent/lxc/lxc.js');
    const data = mkdtempSync(join(tmpdir(), 'corral-up-'));
    const port = await freePort();
    const flags = ['--data', data, '--port', String(port), '--warm', '1', '--name', 'uptest', '--max-uses', '1', '--kill-grace-ms', '500', '--lease-ms', '6000'];
    const up = await startCli(['up', ...flags], { CORRAL_LOG_LEVEL: 'warn' }, /API reference/, 120_000);
    try {
      expect(up.output()).toMatch(/corral -- run -- echo hello/);
      const r = await runCli(['run', '--data', data, '--url', `http://127.0.0.1:${port}`, '--', 'echo hello from a container']);
      expect(r.stdout).toBe('hello from a container\n');
      expect(r.code).toBe(0);
      // --max-uses 1 reached the local agent: no container serves two jobs.
      const token = readFileSync(join(data, 'default.token'), 'utf8').trim();
      const a = await api(`http://127.0.0.1:${port}`, token, 'POST', '/v1/jobs?wait=30', { command: 'true' });
      const b = await api(`http://127.0.0.1:${port}`, token, 'POST', '/v1/jobs?wait=30', { command: 'true' });
      expect(a.body.state).toBe('succeeded');
      expect(b.body.state).toBe('succeeded');
      expect(b.body.attempts[0].container).not.toBe(a.body.attempts[0].container);
    } finally {
      await killed(up.child, 'SIGTERM');
    }
    expect((await lxcLs('/var/lib/lxc')).filter((n) => n.startsWith('corral-run-uptest-'))).toEqual([]);
  });
});
