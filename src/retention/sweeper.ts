import type { Logger } from 'pino';
import type { Store } from '../db/open.js';
import type { Clock } from '../queue/machine.js';
import type { TenantService } from '../tenants/service.js';
import { DELIVERY_RETENTION_MS } from '../triggers/service.js';
import { prepareRetentionSql, type RetentionSql } from './sql.js';

export const DAY_MS = 86_400_000;

/**
 * Rows deleted per transaction. Measured on the 1,000,000-job database of bench/growth.ts: a
 * batch of 500 finished jobs with their attempts and output took 18 ms at the median on a
 * 2-core VM that other work kept busy — the longest the sweep holds the event loop at once.
 * Larger batches add that much latency to the requests sharing the group commit.
 */
export const SWEEP_BATCH = 500;

/** How often the sweep runs. Retention is counted in days: minutes of lag do not matter. */
export const SWEEP_EVERY_MS = 5 * 60_000;

/** What one sweep deleted, by kind of row. */
export interface SweepCounts {
  jobs: number;
  usageHours: number;
  idempotencyKeys: number;
  triggerDeliveries: number;
}

export type SweepKind = keyof SweepCounts;

export interface RetentionOptions {
  store: Store;
  tenants: TenantService;
  /** Days kept when a tenant's quota sets no `retentionDays` (the gateway's `--retention-days`). */
  defaultDays: number;
  log: Logger;
  /** The job machine's clock: ages are measured on the clock that stamped `ended_at`. */
  clock?: Clock;
  batch?: number;
  everyMs?: number;
  /** Told how many rows of a kind each batch deleted (the metrics counter). */
  onDeleted?: (kind: SweepKind, n: number) => void;
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Deletes what has outlived its retention, in small batches off the request path:
 *
 * - finished jobs whose end is older than their tenant's `retentionDays` (or the gateway's
 *   default), with their output, attempts and callback deliveries (foreign keys cascade); a
 *   queued or running job is never touched, nor a job whose callback is still being retried;
 * - the tenant's `usage_hourly` rows older than the same window;
 * - idempotency keys older than the gateway's window (they are honoured for 24 h only);
 * - trigger delivery ids older than the gateway's window, but never before
 *   DELIVERY_RETENTION_MS: a sender may still retry a delivery until then, and a forgotten id
 *   would run it twice.
 *
 * Each batch is its own transaction through the group commit (not fsynced on its own: a delete
 * lost in a crash is simply done again), and the sweep yields to the event loop between batches.
 * `start()` runs it on a timer; `runOnce()` is for tests, which drive the clock.
 */
export class RetentionSweeper {
  private readonly sql: RetentionSql;
  private readonly clock: Clock;
  private readonly batch: number;
  private readonly everyMs: number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<SweepCounts> | undefined;
  private started = false;
  /** Set by stop(): a sweep under way ends after its current batch. */
  private stopping = false;

  constructor(private readonly o: RetentionOptions) {
    this.sql = prepareRetentionSql(o.store.sqlite);
    this.clock = o.clock ?? Date.now;
    this.batch = o.batch ?? SWEEP_BATCH;
    this.everyMs = o.everyMs ?? SWEEP_EVERY_MS;
  }

  /** The window, in ms, that `tenant`'s finished jobs and hourly usage are kept. */
  windowMs(tenant: string): number {
    return (this.o.tenants.quota(tenant).retentionDays ?? this.o.defaultDays) * DAY_MS;
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.schedule(0);
  }

  /** Stops the timer and waits for a sweep under way to finish its batch (before the store closes). */
  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
  }

  private schedule(ms: number): void {
    this.timer = setTimeout(() => {
      this.runOnce()
        .then((n) => {
          const total = n.jobs + n.usageHours + n.idempotencyKeys + n.triggerDeliveries;
          if (total > 0) this.o.log.info({ deleted: n }, 'retention: expired rows deleted');
        })
        // A failed sweep (disk full, a locked database) is tried again at the next tick.
        .catch((err: unknown) => this.o.log.warn({ err }, 'retention: sweep failed'))
        .finally(() => {
          if (!this.stopping) this.schedule(this.everyMs);
        });
    }, ms);
    this.timer.unref();
  }

  /** One sweep of everything expired as of now; resolves with what it deleted. */
  runOnce(): Promise<SweepCounts> {
    this.running ??= this.sweep().finally(() => (this.running = undefined));
    return this.running;
  }

  private async sweep(): Promise<SweepCounts> {
    const now = this.clock();
    const counts: SweepCounts = { jobs: 0, usageHours: 0, idempotencyKeys: 0, triggerDeliveries: 0 };
    for (const tenant of this.o.tenants.ids()) {
      const before = now - this.windowMs(tenant);
      counts.jobs += await this.drain('jobs', () => this.sql.jobs.run({ tenant, before, batch: this.batch }).changes);
      const beforeHour = new Date(before).toISOString().slice(0, 13);
      counts.usageHours += await this.drain('usageHours', () => this.sql.usageHours.run({ tenant, beforeHour, batch: this.batch }).changes);
    }
    const before = now - this.o.defaultDays * DAY_MS;
    counts.idempotencyKeys += await this.drain('idempotencyKeys', () => this.sql.idempotencyKeys.run({ before, batch: this.batch }).changes);
    const deliveriesBefore = now - Math.max(this.o.defaultDays * DAY_MS, DELIVERY_RETENTION_MS);
    counts.triggerDeliveries += await this.drain('triggerDeliveries', () =>
      this.sql.triggerDeliveries.run({ before: deliveriesBefore, batch: this.batch }).changes,
    );
    return counts;
  }

  /** Runs `deleteBatch` in its own transaction until it deletes less than a full batch. */
  private async drain(kind: SweepKind, deleteBatch: () => number): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await this.o.store.commit(deleteBatch, { durable: false });
      total += n;
      if (n > 0) this.o.onDeleted?.(kind, n);
      if (n < this.batch || this.stopping) return total;
      await yieldToEventLoop();
    }
  }
}
