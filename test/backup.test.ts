import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testGateway, type TestGateway } from './fixtures.js';
import { runCli } from './helpers/process.js';

describe('corral backup', () => {
  let g: TestGateway;
  let token: string;

  beforeAll(async () => {
    g = await testGateway();
    token = await g.tenant('acme');
  });
  afterAll(async () => g?.close());

  it('copies the database while jobs are being submitted: the copy opens, is 0600 and holds every job acknowledged before it started', async () => {
    const acked: Array<{ id: string; at: number }> = [];
    let submitting = true;
    let n = 0;
    // Submits go on, one after another, before, during and after the backup.
    const submitter = (async () => {
      while (submitting) {
        const res = await g.req('POST', '/v1/jobs', { token, body: { command: `echo ${n}`, name: `b${n++}` } });
        expect(res.status).toBe(202);
        acked.push({ id: ((await res.json()) as { id: string }).id, at: Date.now() });
      }
    })();
    while (acked.length < 50) await new Promise((r) => setTimeout(r, 5));

    const file = join(g.dir, 'backup.db');
    const startedAt = Date.now();
    const r = await runCli(['backup', file, '--data', g.dir]);
    submitting = false;
    await submitter;
    expect(r.stderr).toMatch(/jwt\.secret and secrets\.key/);
    expect(r.code).toBe(0);
    expect(statSync(file).mode & 0o777).toBe(0o600);

    const before = acked.filter((a) => a.at < startedAt).map((a) => a.id);
    expect(before.length).toBeGreaterThanOrEqual(50);
    expect(acked.length).toBeGreaterThan(before.length); // submits went on while it ran
    const copy = new Database(file, { readonly: true, fileMustExist: true });
    try {
      expect(copy.pragma('integrity_check', { simple: true })).toBe('ok');
      const ids = new Set(copy.prepare('SELECT id FROM jobs').pluck().all() as string[]);
      for (const id of before) expect(ids.has(id)).toBe(true);
    } finally {
      copy.close();
    }
  });

  it('refuses to overwrite an existing file, and says where the database should be when it is not there', async () => {
    const file = join(g.dir, 'taken.db');
    writeFileSync(file, 'precious');
    const r = await runCli(['backup', file, '--data', g.dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/exists/);
    expect(readFileSync(file, 'utf8')).toBe('precious');

    const missing = await runCli(['backup', join(g.dir, 'new.db'), '--data', join(g.dir, 'nowhere')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/no database/);
  });
});
