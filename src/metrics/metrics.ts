import type Database from 'better-sqlite3';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { registerTenantMetrics } from './tenants.js';

/** The gateway's Prometheus metrics, in a registry of its own (one per gateway, so tests can make many). */
export class Metrics {
  readonly registry = new Registry();
  readonly httpDuration: Histogram<'method' | 'route' | 'status'>;
  readonly attemptsEnded: Counter<'reason'>;
  readonly agentsConnected: Gauge;
  readonly retentionDeleted: Counter<'kind'>;

  constructor(db: Database.Database, opts: { agents: () => number; defaultMetrics?: boolean; tenantLabels?: number } = { agents: () => 0 }) {
    // Finished jobs from job_counts (kept by triggers: a few rows per tenant), queued and running
    // ones through their partial indexes (bounded by the queue and the agents' slots). Counting
    // jobs by state walked every stored job: 1.3 s of the event loop per scrape with 1,000,000.
    const byState = db.prepare(
      `SELECT state, sum(n) AS n FROM job_counts GROUP BY state
       UNION ALL SELECT 'queued', count(*) FROM jobs WHERE state = 'queued'
       UNION ALL SELECT 'running', count(*) FROM jobs WHERE state = 'running'`,
    );
    new Gauge({
      name: 'corral_jobs',
      help: 'Jobs by state',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const r of byState.all() as Array<{ state: string; n: number }>) this.set({ state: r.state }, r.n);
      },
    });
    // Per-tenant series, corral_queue_depth among them, with a bounded number of tenant labels.
    registerTenantMetrics(this.registry, db, opts.tenantLabels);
    this.httpDuration = new Histogram({
      name: 'corral_http_request_duration_seconds',
      help: 'HTTP request latency',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 60],
      registers: [this.registry],
    });
    this.attemptsEnded = new Counter({
      name: 'corral_attempts_ended_total',
      help: 'Attempts ended, by reason',
      labelNames: ['reason'],
      registers: [this.registry],
    });
    const agents = opts.agents;
    this.agentsConnected = new Gauge({
      name: 'corral_agents_connected',
      help: 'Agents connected to the hub',
      registers: [this.registry],
      collect() {
        this.set(agents());
      },
    });
    this.retentionDeleted = new Counter({
      name: 'corral_retention_deleted_total',
      help: 'Rows the retention sweep deleted, by kind (jobs, usageHours, idempotencyKeys, triggerDeliveries)',
      labelNames: ['kind'],
      registers: [this.registry],
    });
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }
}
