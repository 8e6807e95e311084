import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadGatewayConfig } from '../../src/config.js';
import { startGateway, type Gateway } from '../../src/gateway.js';

const quiet = pino({ level: 'silent' });
const mode = (p: string) => statSync(p).mode & 0o777;

let gateway: Gateway | undefined;
const roots: string[] = [];
let savedUmask: number | undefined;

afterEach(async () => {
  await gateway?.close();
  gateway = undefined;
  if (savedUmask !== undefined) process.umask(savedUmask);
  savedUmask = undefined;
  for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true });
});

function root(): string {
  const r = mkdtempSync(join(tmpdir(), 'corral-datadir-'));
  roots.push(r);
  return r;
}

const start = (dataDir: string) =>
  startGateway(loadGatewayConfig({}, { CORRAL_DATA: dataDir, CORRAL_PORT: '0', CORRAL_LOG_LEVEL: 'silent' }), { log: quiet });

describe('state on disk is private', () => {
  it('a fresh data directory is 0700 and the database, WAL, shm, secret and admin token are 0600, even under umask 000', async () => {
    // A permissive umask must not widen anything: every mode is set explicitly.
    savedUmask = process.umask(0);
    const dir = join(root(), 'nested', 'data');
    gateway = await start(dir);
    // Write something so the WAL has content.
    await gateway.services.tenants.create('acme');
    expect(mode(dir)).toBe(0o700);
    for (const f of ['corral.db', 'corral.db-wal', 'corral.db-shm', 'jwt.secret', 'admin.token']) {
      const p = join(dir, f);
      expect(existsSync(p), f).toBe(true);
      expect(mode(p), f).toBe(0o600);
    }
  });

  it.each(['0755', '0750', '0711', '0701', '0770', '0707'])('refuses to start on an existing data directory with mode %s', async (m) => {
    const dir = join(root(), 'data');
    mkdirSync(dir);
    chmodSync(dir, parseInt(m, 8));
    const err = await start(dir).then(
      (g) => {
        gateway = g;
        return undefined;
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/data directory .* is open to group or others/);
    expect((err as Error).message).toContain('chmod 700');
    // Nothing was written into it.
    expect(existsSync(join(dir, 'corral.db'))).toBe(false);
    expect(existsSync(join(dir, 'jwt.secret'))).toBe(false);
  });

  it('starts on an existing 0700 directory and tightens a database left 0644 by an older version', async () => {
    const dir = join(root(), 'data');
    gateway = await start(dir);
    await gateway.close();
    gateway = undefined;
    chmodSync(join(dir, 'corral.db'), 0o644);
    gateway = await start(dir);
    expect(mode(join(dir, 'corral.db'))).toBe(0o600);
  });
});
