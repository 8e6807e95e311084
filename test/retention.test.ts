import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadGatewayConfig } from '../src/config.js';
import { DAY_MS, RetentionSweeper } from '../src/retention/sweeper.js';
import { problemOf, testGateway, type TestGateway } from './fixtures.js';

/** The gateway's clock: real time plus days the test moves it on (jobs are submitted on real time). */
let offsetMs = 0;
const clock = () => Date.now() + offsetMs;
const later = (days: number, ms = 0) => (offsetMs += days * DAY_MS + ms);

let g: TestGateway | undefined;
afterEach(async () => {
  await g?.close();
  g = undefined;
  offsetMs = 0;
});

async function gateway(env: Record<string, string> = {}) {
  g = await testGateway(env, { clock });
  return g;
}

/** The gateway of the test under way. */
function gw(): TestGateway {
  if (!g) throw new Error('no gateway');
  return g;
}

/** Submits a job and takes it to `succeeded` through the job machine, with output and a callback delivery and try. */
async function finishedJob(token: string): Promise<string> {
  const res = await gw().req('POST', '/v1/jobs', { token, body: { command: 'echo hi' } });
  expect(res.status).toBe(202);
  const { id } = (await res.json()) as { id: string };
  const claim = gw().s.machine.claim(id, 'agent-1')!;
  gw().s.output.append(id, claim.fence, 'stdout', Buffer.from('hi\n'));
  gw().s.machine.finish(id, claim.fence, { exitCode: 0, signal: null, reason: 'exit', cpuSeconds: 0.01, peakMemoryBytes: 1 });
  addDelivery(id, 'delivered');
  return id;
}

function addDelivery(jobId: string, state: 'pending' | 'delivered') {
  const db = gw().s.store.sqlite;
  const tenant = db.prepare(`SELECT tenant FROM jobs WHERE id = ?`).pluck().get(jobId);
  db.prepare(
    `INSERT INTO callback_deliveries (id, job_id, tenant, url, state, tries, next_at, created_at, updated_at)
     VALUES (?, ?, ?, 'https://example.com/hook', ?, 1, 0, 0, 0)`,
  ).run(`dlv_${jobId}`, jobId, tenant, state);
  db.prepare(`INSERT INTO callback_tries (delivery_id, n, at, status, duration_ms) VALUES (?, 1, 0, 500, 3)`).run(`dlv_${jobId}`);
}

/** Rows any table still holds for the job. */
function rowsOf(jobId: string) {
  const db = gw().s.store.sqlite;
  const n = (sql: string) => db.prepare(sql).pluck().get(jobId) as number;
  return {
    jobs: n(`SELECT count(*) FROM jobs WHERE id = ?`),
    attempts: n(`SELECT count(*) FROM attempts WHERE job_id = ?`),
    output: n(`SELECT count(*) FROM output WHERE job_id = ?`),
    deliveries: n(`SELECT count(*) FROM callback_deliveries WHERE job_id = ?`),
    tries: n(`SELECT count(*) FROM callback_tries WHERE delivery_id = 'dlv_' || ?`),
  };
}
const none = { jobs: 0, attempts: 0, output: 0, deliveries: 0, tries: 0 };
const kept = { jobs: 1, attempts: 1, output: 1, deliveries: 1, tries: 1 };

describe('retention', () => {
  it('deletes a finished job past the window with its output, attempts and callback deliveries, and keeps younger ones', async () => {
    await gateway();
    const t = await gw().tenant('acme');
    const old = await finishedJob(t);
    later(2);
    const young = await finishedJob(t);
    later(5, 1000); // the first job ended 7 days and a second ago, the second 5 days ago

    const swept = await gw().s.retention.runOnce();

    expect(swept.jobs).toBe(1);
    expect(rowsOf(old)).toEqual(none);
    expect(rowsOf(young)).toEqual(kept);
    expect((await gw().req('GET', `/v1/jobs/${old}`, { token: t })).status).toBe(404);
    expect((await gw().req('GET', `/v1/jobs/${young}`, { token: t })).status).toBe(200);
  });

  it('never deletes a queued or running job, however old', async () => {
    await gateway();
    const t = await gw().tenant('acme');
    const submit = async () => ((await (await gw().req('POST', '/v1/jobs', { token: t, body: { command: 'sleep 1' } })).json()) as { id: string }).id;
    const queued = await submit();
    const running = await submit();
    gw().s.machine.claim(running, 'agent-1');
    later(365);

    expect((await gw().s.retention.runOnce()).jobs).toBe(0);

    const state = (id: string) => gw().s.store.sqlite.prepare(`SELECT state FROM jobs WHERE id = ?`).pluck().get(id);
    expect([state(queued), state(running)]).toEqual(['queued', 'running']);
  });

  it('keeps a job whose callback is still being retried, and deletes it once the delivery ends', async () => {
    await gateway();
    const t = await gw().tenant('acme');
    const id = await finishedJob(t);
    gw().s.store.sqlite.prepare(`UPDATE callback_deliveries SET state = 'pending' WHERE job_id = ?`).run(id);
    later(8);

    await gw().s.retention.runOnce();
    expect(rowsOf(id).jobs).toBe(1);

    gw().s.store.sqlite.prepare(`UPDATE callback_deliveries SET state = 'failed' WHERE job_id = ?`).run(id);
    await gw().s.retention.runOnce();
    expect(rowsOf(id)).toEqual(none);
  });

  it("a tenant's retentionDays overrides the gateway's default, and null gives the default back", async () => {
    await gateway({ CORRAL_RETENTION_DAYS: '3' });
    const brief = await gw().tenant('brief', { retentionDays: 1 });
    const long = await gw().tenant('long', { retentionDays: 30 });
    const usual = await gw().tenant('usual');
    const jobs = { brief: await finishedJob(brief), long: await finishedJob(long), usual: await finishedJob(usual) };

    later(1, 1000);
    await gw().s.retention.runOnce();
    expect([rowsOf(jobs.brief).jobs, rowsOf(jobs.long).jobs, rowsOf(jobs.usual).jobs]).toEqual([0, 1, 1]);

    later(2);
    await gw().s.retention.runOnce();
    expect([rowsOf(jobs.long).jobs, rowsOf(jobs.usual).jobs]).toEqual([1, 0]);

    const patched = await gw().req('PATCH', '/v1/tenants/long', { token: gw().admin, body: { quota: { retentionDays: null } } });
    expect(patched.status).toBe(200);
    expect(((await patched.json()) as { quota: { retentionDays: number | null } }).quota.retentionDays).toBeNull();
    await gw().s.retention.runOnce();
    expect(rowsOf(jobs.long).jobs).toBe(0);
  });

  it('refuses a retentionDays that is not a whole number of days from 1, naming the field', async () => {
    await gateway();
    await gw().tenant('acme');
    for (const retentionDays of [0, 1.5, '7', 100_000]) {
      const res = await gw().req('PATCH', '/v1/tenants/acme', { token: gw().admin, body: { quota: { retentionDays } } });
      expect(res.status).toBe(400);
      expect((await problemOf(res)).fields).toContain('quota.retentionDays');
    }
  });

  it('expires idempotency keys and hourly usage with the window, and trigger delivery ids only after the senders stop retrying', async () => {
    await gateway({ CORRAL_RETENTION_DAYS: '2' });
    const t = await gw().tenant('acme');
    const db = gw().s.store.sqlite;
    const keyed = await gw().req('POST', '/v1/jobs', { token: t, body: { command: 'true' }, headers: { 'idempotency-key': 'k1' } });
    expect(keyed.status).toBe(202);
    db.prepare(`INSERT INTO functions (tenant, name, version, image, command, retries, env, content_type, created_at, updated_at)
                VALUES ('acme', 'f', 1, 'busybox', '"true"', 0, '{}', 'text/plain', 0, 0)`).run();
    db.prepare(`INSERT INTO triggers (id, tenant, function, kind, secret_enc, created_at) VALUES ('trg_1', 'acme', 'f', 'standard', 'x', 0)`).run();
    db.prepare(`INSERT INTO trigger_deliveries (trigger_id, delivery_id, job_id, created_at) VALUES ('trg_1', 'msg_1', 'job_x', ?)`).run(clock());
    const hour = (ms: number) => new Date(ms).toISOString().slice(0, 13);
    db.prepare(`INSERT INTO usage_hourly (tenant, hour, jobs, failures) VALUES ('acme', ?, 3, 1)`).run(hour(clock()));
    const count = (table: string) => db.prepare(`SELECT count(*) FROM ${table}`).pluck().get() as number;

    later(2, 3_600_000);
    db.prepare(`INSERT INTO usage_hourly (tenant, hour, jobs, failures) VALUES ('acme', ?, 1, 0)`).run(hour(clock()));
    const swept = await gw().s.retention.runOnce();

    expect(swept).toMatchObject({ idempotencyKeys: 1, usageHours: 1, triggerDeliveries: 0 });
    expect([count('idempotency_keys'), count('usage_hourly'), count('trigger_deliveries')]).toEqual([0, 1, 1]);

    later(28); // 30 days and an hour since the delivery: no sender retries it any more
    expect((await gw().s.retention.runOnce()).triggerDeliveries).toBe(1);
    expect(count('trigger_deliveries')).toBe(0);
  });

  it('deletes in transactions of at most one batch and lets other work run between them', async () => {
    await gateway();
    const t = await gw().tenant('acme');
    for (let i = 0; i < 25; i++) await finishedJob(t);
    later(8);
    const batches: number[] = [];
    const sweeper = new RetentionSweeper({ store: gw().s.store, tenants: gw().s.tenants, defaultDays: 7, log: gw().s.log, clock, batch: 10, onDeleted: (kind, n) => kind === 'jobs' && batches.push(n) });

    const sweep = sweeper.runOnce();
    // Queued behind the first batch's commit: it runs before the sweep ends only if the sweep yields.
    const seen = new Promise<number>((resolve) => setImmediate(() => resolve(batches.reduce((a, b) => a + b, 0))));

    expect((await sweep).jobs).toBe(25);
    expect(batches).toEqual([10, 10, 5]);
    const midway = await seen;
    expect(midway).toBeGreaterThan(0);
    expect(midway).toBeLessThan(25);
  });

  it('reads its default window from --retention-days or CORRAL_RETENTION_DAYS (7 days when unset)', () => {
    expect(loadGatewayConfig({}, {}).retentionDays).toBe(7);
    expect(loadGatewayConfig({}, { CORRAL_RETENTION_DAYS: '30' }).retentionDays).toBe(30);
    expect(loadGatewayConfig({ 'retention-days': '2' }, { CORRAL_RETENTION_DAYS: '30' }).retentionDays).toBe(2);
    expect(() => loadGatewayConfig({}, { CORRAL_RETENTION_DAYS: '0' })).toThrow(ConfigError);
  });
});
