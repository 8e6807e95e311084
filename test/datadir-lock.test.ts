import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, killed, runCli, startCli } from './helpers/process.js';

const healthy = async (port: number) => (await fetch(`http://127.0.0.1:${port}/healthz`)).status;

describe('one gateway per data directory', () => {
  it('a second corral gateway or corral up on the same --data refuses (exit 2) while the first serves and can be backed up; after kill -9 a new one starts', async () => {
    const data = mkdtempSync(join(tmpdir(), 'corral-lock-'));
    const [port, other, third] = await Promise.all([freePort(), freePort(), freePort()]);
    const first = await startCli(['gateway', '--data', data, '--port', String(port)], {}, /gateway listening/);
    let restarted: Awaited<ReturnType<typeof startCli>> | undefined;
    try {
      const second = await runCli(['gateway', '--data', data, '--port', String(other)]);
      expect(second.code).toBe(2);
      expect(second.stderr).toContain(`corral: data directory ${data} is in use by another corral gateway (pid ${first.child.pid})`);
      // `up` is refused before it builds or starts anything (no agent, no port).
      const up = await runCli(['up', '--data', data, '--port', String(other), '--name', 'locktest']);
      expect(up.code).toBe(2);
      expect(up.stderr).toContain('is in use by another corral gateway');

      expect(first.child.exitCode).toBeNull();
      expect(await healthy(port)).toBe(200);
      const admin = readFileSync(join(data, 'admin.token'), 'utf8').trim();
      const created = await fetch(`http://127.0.0.1:${port}/v1/tenants`, {
        method: 'POST',
        headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
        body: JSON.stringify({ id: 'acme' }),
      });
      expect(created.status).toBe(201);

      // The lock is on its own file: the database can still be copied while the gateway serves.
      const backup = await runCli(['backup', join(data, '..', `${data.split('/').pop()}.backup.db`), '--data', data]);
      expect(backup.code).toBe(0);
      expect(backup.stdout).toMatch(/backed up .* \(\d+ bytes, 0 jobs\)/);

      // kill -9: the kernel drops the lock with the process, nothing stale blocks the restart.
      await killed(first.child, 'SIGKILL');
      restarted = await startCli(['gateway', '--data', data, '--port', String(third)], {}, /gateway listening/);
      expect(await healthy(third)).toBe(200);
      const tenant = await fetch(`http://127.0.0.1:${third}/v1/tenants/acme`, { headers: { authorization: `Bearer ${admin}` } });
      expect(tenant.status).toBe(200);
    } finally {
      await killed(first.child);
      if (restarted) await killed(restarted.child);
    }
  }, 60_000);
});
