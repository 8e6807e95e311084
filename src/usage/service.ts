import type Database from 'better-sqlite3';
import type { Quota } from '../tenants/quota.js';
import type { TenantService } from '../tenants/service.js';
import { cpuLimitOf, utcDay, utcHour } from './meter.js';

/** Days of history a usage report shows, today included. */
export const USAGE_DAYS = 30;
/** Hours of history a usage report shows, the current UTC hour included. */
export const USAGE_HOURS = 48;

export interface DayUsage {
  day: string;
  jobs: number;
  attempts: number;
  cpuSeconds: number;
  wallSeconds: number;
  gbSeconds: number;
  peakMemoryBytes: number;
  failures: Record<string, number>;
}

/** Jobs that took a final state in one UTC hour ('YYYY-MM-DDTHH'), and how many of them did not succeed. */
export interface HourUsage {
  hour: string;
  jobs: number;
  failures: number;
}

export interface UsageNow {
  queued: number;
  running: number;
  /** Seconds the longest-waiting runnable queued job has waited (0 with none). */
  oldestQueuedAgeSeconds: number;
}

export interface Budget {
  cpuSecondsPerDay: number | null;
  /** Today's (UTC) CPU-seconds: ended attempts, plus running ones at their CPU limit × time so far. */
  usedToday: number;
  /** null when the budget is unlimited. */
  leftToday: number | null;
}

export interface UsageReport {
  tenant: string;
  quota: Quota;
  now: UsageNow;
  /** Newest first: today, then each day before it, USAGE_DAYS in all (days without use are zeros). */
  days: DayUsage[];
  /** Newest first: this hour, then each hour before it, USAGE_HOURS in all (zeros filled). */
  hours: HourUsage[];
  budget: Budget;
}

/** A usage_daily row as read: failures still JSON text. */
type DayRow = Omit<DayUsage, 'failures'> & { tenant: string; failures: string };

const round = (n: number, places = 3) => Math.round(n * 10 ** places) / 10 ** places;

function toDay(r: DayRow): DayUsage {
  return {
    day: r.day,
    jobs: r.jobs,
    attempts: r.attempts,
    cpuSeconds: round(r.cpuSeconds),
    wallSeconds: round(r.wallSeconds),
    gbSeconds: round(r.gbSeconds),
    peakMemoryBytes: r.peakMemoryBytes,
    failures: JSON.parse(r.failures) as Record<string, number>,
  };
}

const emptyDay = (day: string): DayUsage => ({ day, jobs: 0, attempts: 0, cpuSeconds: 0, wallSeconds: 0, gbSeconds: 0, peakMemoryBytes: 0, failures: {} });

/** The USAGE_DAYS UTC days ending today, newest first. */
export function lastDays(now: number, n = USAGE_DAYS): string[] {
  return Array.from({ length: n }, (_, i) => utcDay(now - i * 86_400_000));
}

/** The USAGE_HOURS UTC hours ending with the current one, newest first. */
export function lastHours(now: number, n = USAGE_HOURS): string[] {
  return Array.from({ length: n }, (_, i) => utcHour(now - i * 3_600_000));
}

/**
 * Usage as tenants and admins read it. Every read is bounded by an index: `usage_daily` by its
 * primary key (tenant, day) or its day index, `usage_hourly` by its primary key (tenant, hour); queued and running jobs through the partial
 * indexes `jobs_claimable` and `jobs_running` (a tenant's queued rows are at most its maxQueued,
 * its running ones at most its maxConcurrent). Nothing here scans `jobs` or `attempts` whole.
 */
export class UsageService {
  private readonly q;

  constructor(
    db: Database.Database,
    private readonly tenants: TenantService,
    /** The job machine's clock: the days and ages here agree with the times attempts record. */
    private readonly clock: () => number = Date.now,
  ) {
    const cols = `tenant, day, jobs, attempts, cpu_seconds AS cpuSeconds, wall_seconds AS wallSeconds, gb_seconds AS gbSeconds,
                  peak_memory_bytes AS peakMemoryBytes, failures`;
    this.q = {
      days: db.prepare(`SELECT ${cols} FROM usage_daily WHERE tenant = ? AND day >= ? ORDER BY day DESC`),
      hours: db.prepare(`SELECT hour, jobs, failures FROM usage_hourly WHERE tenant = ? AND hour >= ?`),
      allDays: db.prepare(`SELECT ${cols} FROM usage_daily WHERE day >= ?`),
      cpuOn: db.prepare(`SELECT cpu_seconds FROM usage_daily WHERE tenant = ? AND day = ?`).pluck(),
      // Running rows are few (bounded by agent slots); attempt n = attempt_count is a primary-key lookup.
      running: db.prepare(
        `SELECT CASE WHEN j.memory IS NULL THEN json_extract(j.spec, '$.cpu') ELSE j.cpu END AS cpu,
                CASE WHEN j.memory IS NULL THEN json_extract(j.spec, '$.cpuset') ELSE j.cpuset END AS cpuset,
                coalesce(a.started_at, a.claimed_at) AS since
         FROM jobs j JOIN attempts a ON a.job_id = j.id AND a.n = j.attempt_count
         WHERE j.tenant = ? AND j.state = 'running'`,
      ),
      queued: db.prepare(`SELECT count(*) FROM jobs WHERE tenant = ? AND state = 'queued'`).pluck(),
      runningCount: db.prepare(`SELECT count(*) FROM jobs WHERE tenant = ? AND state = 'running'`).pluck(),
      oldest: db.prepare(`SELECT run_after FROM jobs WHERE tenant = ? AND state = 'queued' ORDER BY run_after, id LIMIT 1`).pluck(),
    };
  }

  /**
   * Today's CPU-seconds for `tenant`, running attempts included. A running attempt has no
   * measured CPU yet; it is counted at its CPU limit × the time it has run, which is what the
   * cgroup lets it use at most — an upper bound, so a tenant cannot outrun its budget with long
   * jobs, and no agent protocol change or heartbeat timing is involved. When the attempt ends
   * the estimate is replaced by what the agent measured.
   */
  cpuToday(tenant: string, now: number): number {
    const ended = (this.q.cpuOn.get(tenant, utcDay(now)) as number | undefined) ?? 0;
    let running = 0;
    for (const r of this.q.running.all(tenant) as Array<{ cpu: number | null; cpuset: string | null; since: number }>) {
      running += cpuLimitOf(r.cpu, r.cpuset) * (Math.max(0, now - r.since) / 1000);
    }
    return ended + running;
  }

  /** Whether `tenant` has used its daily CPU budget (running attempts included). */
  overBudget(tenant: string, quota: Quota, now: number): boolean {
    return quota.cpuSecondsPerDay !== null && this.cpuToday(tenant, now) >= quota.cpuSecondsPerDay;
  }

  budget(tenant: string, quota: Quota, now: number): Budget {
    const used = round(this.cpuToday(tenant, now));
    const limit = quota.cpuSecondsPerDay;
    return { cpuSecondsPerDay: limit, usedToday: used, leftToday: limit === null ? null : round(Math.max(0, limit - used)) };
  }

  now(tenant: string, now: number): UsageNow {
    const oldest = this.q.oldest.get(tenant) as number | undefined;
    return {
      queued: this.q.queued.get(tenant) as number,
      running: this.q.runningCount.get(tenant) as number,
      oldestQueuedAgeSeconds: oldest === undefined ? 0 : Math.max(0, Math.floor((now - oldest) / 1000)),
    };
  }

  /** `tenant`'s report: quota, now, the last USAGE_DAYS days and USAGE_HOURS hours, today's budget. */
  report(tenant: string, now = this.clock()): UsageReport {
    const quota = this.tenants.quota(tenant);
    const days = lastDays(now);
    const rows = new Map((this.q.days.all(tenant, days[days.length - 1]) as DayRow[]).map((r) => [r.day, toDay(r)]));
    const hours = lastHours(now);
    const hourRows = new Map((this.q.hours.all(tenant, hours[hours.length - 1]) as HourUsage[]).map((r) => [r.hour, r]));
    return {
      tenant,
      quota,
      now: this.now(tenant, now),
      days: days.map((d) => rows.get(d) ?? emptyDay(d)),
      hours: hours.map((h) => hourRows.get(h) ?? { hour: h, jobs: 0, failures: 0 }),
      budget: this.budget(tenant, quota, now),
    };
  }

  /**
   * Every tenant, for the admin: now, today, the USAGE_DAYS-day totals and the budget. One read
   * of `usage_daily` by its day index, then per tenant the same bounded reads as `report`.
   */
  all(now = this.clock()) {
    const days = lastDays(now);
    const today = days[0]!;
    const byTenant = new Map<string, { today: DayUsage; total: DayUsage }>();
    for (const r of this.q.allDays.all(days[days.length - 1]) as DayRow[]) {
      let t = byTenant.get(r.tenant);
      if (!t) byTenant.set(r.tenant, (t = { today: emptyDay(today), total: emptyDay(`${days[days.length - 1]}..${today}`) }));
      const d = toDay(r);
      if (r.day === today) t.today = d;
      add(t.total, d);
    }
    const tenants = this.tenants.ids().sort().map((id) => {
      const quota = this.tenants.quota(id);
      const u = byTenant.get(id);
      return {
        tenant: id,
        now: this.now(id, now),
        today: u?.today ?? emptyDay(today),
        last30Days: u?.total ?? emptyDay(`${days[days.length - 1]}..${today}`),
        budget: this.budget(id, quota, now),
      };
    });
    return { day: today, tenants };
  }
}

function add(into: DayUsage, d: DayUsage): void {
  into.jobs += d.jobs;
  into.attempts += d.attempts;
  into.cpuSeconds = round(into.cpuSeconds + d.cpuSeconds);
  into.wallSeconds = round(into.wallSeconds + d.wallSeconds);
  into.gbSeconds = round(into.gbSeconds + d.gbSeconds);
  into.peakMemoryBytes = Math.max(into.peakMemoryBytes, d.peakMemoryBytes);
  for (const [k, v] of Object.entries(d.failures)) into.failures[k] = (into.failures[k] ?? 0) + v;
}
