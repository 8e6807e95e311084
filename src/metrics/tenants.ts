import type Database from 'better-sqlite3';
import { Gauge, type Registry } from 'prom-client';
import { utcDay } from '../usage/meter.js';

/**
 * Tenants that get a label of their own in /metrics; every other tenant is summed under
 * tenant="other". Each series is one label per tenant, so this bounds every per-tenant metric
 * at TENANT_LABELS + 1 series however many tenants there are (a tenant could otherwise blow up
 * the scraper's memory by existing).
 */
export const TENANT_LABELS = 20;
export const OTHER = 'other';

interface TenantRow {
  tenant: string;
  queued: number;
  running: number;
  jobs: number;
  attempts: number;
  cpuSeconds: number;
  gbSeconds: number;
}

type Field = Exclude<keyof TenantRow, 'tenant'>;

/**
 * Per-tenant gauges: queued and running now, and today's (UTC) jobs, attempts, CPU-seconds and
 * GB-seconds from usage_daily. The labelled tenants are the top TENANT_LABELS by today's
 * CPU-seconds, then by queued + running: the ones an operator looks for.
 */
export function registerTenantMetrics(registry: Registry, db: Database.Database, limit = TENANT_LABELS): void {
  const today = db.prepare(
    `SELECT tenant, jobs, attempts, cpu_seconds AS cpuSeconds, gb_seconds AS gbSeconds FROM usage_daily WHERE day = ?`,
  );
  // Both walk partial indexes: queued rows are bounded by the tenants' maxQueued, running ones by agent slots.
  const queued = db.prepare(`SELECT tenant, count(*) AS n FROM jobs WHERE state = 'queued' GROUP BY tenant`);
  const running = db.prepare(`SELECT tenant, count(*) AS n FROM jobs WHERE state = 'running' GROUP BY tenant`);

  // One snapshot per scrape, shared by the gauges so they label the same tenants.
  let snap: { at: number; rows: TenantRow[] } | undefined;
  const snapshot = (): TenantRow[] => {
    const now = Date.now();
    if (snap && now - snap.at < 1000) return snap.rows;
    const by = new Map<string, TenantRow>();
    const row = (t: string) => {
      let r = by.get(t);
      if (!r) by.set(t, (r = { tenant: t, queued: 0, running: 0, jobs: 0, attempts: 0, cpuSeconds: 0, gbSeconds: 0 }));
      return r;
    };
    for (const u of today.all(utcDay(now)) as Array<Omit<TenantRow, 'queued' | 'running'>>) Object.assign(row(u.tenant), u);
    for (const q of queued.all() as Array<{ tenant: string; n: number }>) row(q.tenant).queued = q.n;
    for (const q of running.all() as Array<{ tenant: string; n: number }>) row(q.tenant).running = q.n;
    const ranked = [...by.values()].sort((a, b) => b.cpuSeconds - a.cpuSeconds || b.queued + b.running - (a.queued + a.running) || (a.tenant < b.tenant ? -1 : 1));
    const rows = ranked.slice(0, limit);
    const rest = ranked.slice(limit);
    // A tenant actually named "other" is summed in too: a label means one thing.
    const other = rows.findIndex((r) => r.tenant === OTHER);
    if (other !== -1) rest.push(...rows.splice(other, 1));
    if (rest.length > 0) {
      const sum: TenantRow = { tenant: OTHER, queued: 0, running: 0, jobs: 0, attempts: 0, cpuSeconds: 0, gbSeconds: 0 };
      for (const r of rest) for (const k of Object.keys(sum) as Array<keyof TenantRow>) if (k !== 'tenant') sum[k] += r[k];
      rows.push(sum);
    }
    snap = { at: now, rows };
    return rows;
  };

  const gauge = (name: string, help: string, field: Field) =>
    new Gauge({
      name,
      help: `${help} (top ${limit} tenants by today's CPU-seconds; the rest summed as tenant="${OTHER}")`,
      labelNames: ['tenant'],
      registers: [registry],
      collect() {
        this.reset();
        for (const r of snapshot()) this.set({ tenant: r.tenant }, r[field]);
      },
    });
  gauge('corral_queue_depth', 'Queued jobs per tenant', 'queued');
  gauge('corral_tenant_running', 'Running jobs per tenant', 'running');
  gauge('corral_tenant_jobs_today', 'Jobs that ended today (UTC) per tenant', 'jobs');
  gauge('corral_tenant_attempts_today', 'Attempts that ended today (UTC) per tenant', 'attempts');
  gauge('corral_tenant_cpu_seconds_today', 'CPU-seconds used today (UTC) per tenant, by ended attempts', 'cpuSeconds');
  gauge('corral_tenant_gb_seconds_today', 'GB-seconds (memory limit × wall) today (UTC) per tenant', 'gbSeconds');
}
