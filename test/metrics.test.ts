import type Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { Metrics } from '../src/metrics/metrics.js';
import { testGateway, type TestGateway } from './fixtures.js';

let g: TestGateway | undefined;
afterEach(async () => {
  await g?.close();
  g = undefined;
});

/** corral_jobs{state} as a scrape shows it (states with no jobs left out). */
async function scrapedByState(gw: TestGateway): Promise<Record<string, number>> {
  const text = await (await gw.req('GET', '/metrics', { token: gw.admin })).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^corral_jobs\{state="(\w+)"\} (\d+)$/gm)) if (Number(m[2]) > 0) out[m[1]!] = Number(m[2]);
  return out;
}

/** What counting the jobs table says. */
function countedByState(gw: TestGateway): Record<string, number> {
  const rows = gw.s.store.sqlite.prepare(`SELECT state, count(*) AS n FROM jobs GROUP BY state`).all() as Array<{ state: string; n: number }>;
  return Object.fromEntries(rows.map((r) => [r.state, r.n]));
}

describe('/metrics', () => {
  it('counts jobs by state exactly through submit, claim, retry, finish, cancel, delete and retention', async () => {
    const gw = (g = await testGateway({}, { backoffBaseMs: 0 }));
    const t = await gw.tenant('acme');
    const m = gw.s.machine;
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const res = await gw.req('POST', '/v1/jobs', { token: t, body: { command: 'true', retries: 1 } });
      ids.push(((await res.json()) as { id: string }).id);
    }
    const [a, b, c, d, e] = ids as [string, string, string, string, string];
    expect(await scrapedByState(gw)).toEqual({ queued: 6 });

    const fence = (id: string) => m.claim(id, 'agent-1')!.fence;
    m.finish(a, fence(a), { exitCode: 0, signal: null, reason: 'exit' });
    m.finish(b, fence(b), { exitCode: 1, signal: null, reason: 'exit' }); // back to the queue: a retry left
    m.finish(b, fence(b), { exitCode: 1, signal: null, reason: 'exit' });
    fence(c);
    m.cancel(d);
    await gw.req('DELETE', `/v1/jobs/${e}`, { token: t });
    expect(await scrapedByState(gw)).toEqual({ queued: 1, running: 1, succeeded: 1, failed: 1, cancelled: 1 });
    expect(await scrapedByState(gw)).toEqual(countedByState(gw));

    await gw.req('DELETE', `/v1/jobs/${a}`, { token: t });
    gw.s.store.sqlite.prepare(`UPDATE jobs SET ended_at = 0 WHERE id = ?`).run(b);
    expect((await gw.s.retention.runOnce()).jobs).toBe(1);
    expect(await scrapedByState(gw)).toEqual({ queued: 1, running: 1, cancelled: 1 });
    expect(await scrapedByState(gw)).toEqual(countedByState(gw));
  });

  it('answers a scrape without reading a finished job: only queued and running ones, through their partial indexes', async () => {
    const gw = (g = await testGateway());
    const t = await gw.tenant('acme');
    await gw.req('POST', '/v1/jobs', { token: t, body: { command: 'true' } });
    const prepared: string[] = [];
    const db = gw.s.store.sqlite;
    const recording = new Proxy(db, {
      get(target, key) {
        if (key === 'prepare') return (sql: string) => (prepared.push(sql), target.prepare(sql));
        const v = Reflect.get(target, key) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }) as Database.Database;

    await new Metrics(recording, { agents: () => 0 }).registry.metrics();

    expect(prepared.length).toBeGreaterThan(0);
    for (const sql of prepared) {
      const params = Array<null>(sql.split('?').length - 1).fill(null);
      const plan = (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as Array<{ detail: string }>).map((r) => r.detail);
      for (const step of plan.filter((d) => /\bjobs\b/.test(d))) expect(step, sql).toMatch(/USING COVERING INDEX jobs_(claimable|running)\b/);
    }
  });
});
