import type Database from 'better-sqlite3';
import { LimitExceeded, QuotaExceeded, Unprocessable } from '../errors/domain.js';
import type { ImageRegistry } from '../images/registry.js';
import type { Quota } from '../tenants/quota.js';
import { RateLimiter } from '../tenants/rate.js';
import type { JobSpec } from './spec.js';

const DEFAULT_MEMORY_BYTES = 256 * 1024 ** 2;
const COUNT_TTL_MS = 250;

/** How many CPUs a cpuset such as "0-1,4" names. */
export function cpusetSize(cpuset: string): number {
  return cpuset.split(',').reduce((n, part) => {
    const [a, b] = part.split('-').map(Number);
    return n + (b === undefined ? 1 : Math.max(0, b - a! + 1));
  }, 0);
}

/**
 * Quota admission for a new job: the per-job maxima (422 naming the limit), then the limits that
 * pass with time — rate, queue depth, daily CPU budget (429 with Retry-After). It also fills the
 * limits the job left unset from the tenant's quota, so every job runs bounded.
 */
export class Admission {
  private readonly rate = new RateLimiter();
  private readonly queuedCount;
  private readonly cpuUsed;
  private readonly counts = new Map<string, { at: number; queued: number; added: number }>();
  private readonly budgets = new Map<string, { at: number; used: number }>();

  constructor(
    db: Database.Database,
    private readonly images: ImageRegistry,
  ) {
    this.queuedCount = db.prepare(`SELECT count(*) AS n FROM jobs WHERE tenant = ? AND state = 'queued'`).pluck();
    this.cpuUsed = db.prepare(`SELECT coalesce(sum(cpu_seconds), 0) FROM attempts WHERE tenant = ? AND ended_at >= ?`).pluck();
  }

  /** Checks `spec` against `quota` and fills unset limits; throws a domain error when it may not run. */
  admit(tenant: string, spec: JobSpec, quota: Quota, now = Date.now()): JobSpec {
    if (!this.images.known(spec.image)) throw new Unprocessable(`image "${spec.image}" is not available`, 'image');
    // Containers have no network interface but lo; no policy grants one yet.
    if (spec.network) throw new Unprocessable('network access is not allowed by this gateway', 'network');
    if (spec.timeout > quota.maxTimeoutSeconds) {
      throw new LimitExceeded(`timeout ${spec.timeout}s exceeds the tenant's maxTimeoutSeconds (${quota.maxTimeoutSeconds})`, 'timeout', 'maxTimeoutSeconds');
    }
    if (spec.memory !== undefined && spec.memory > quota.maxMemoryBytes) {
      throw new LimitExceeded(`memory ${spec.memory} bytes exceeds the tenant's maxMemoryBytes (${quota.maxMemoryBytes})`, 'memory', 'maxMemoryBytes');
    }
    if (spec.cpu !== undefined && spec.cpu > quota.maxCpu) {
      throw new LimitExceeded(`cpu ${spec.cpu} exceeds the tenant's maxCpu (${quota.maxCpu})`, 'cpu', 'maxCpu');
    }
    if (spec.cpuset !== undefined && cpusetSize(spec.cpuset) > quota.maxCpu) {
      throw new LimitExceeded(`cpuset names more CPUs than the tenant's maxCpu (${quota.maxCpu})`, 'cpuset', 'maxCpu');
    }
    const r = this.rate.take(tenant, quota.ratePerMinute, now);
    if (!r.ok) throw new QuotaExceeded(`more than ${quota.ratePerMinute} submissions a minute`, 'ratePerMinute', r.retryAfter);
    if (this.queued(tenant, now) >= quota.maxQueued) {
      throw new QuotaExceeded(`the tenant already has ${quota.maxQueued} jobs queued`, 'maxQueued', 5);
    }
    if (this.cpuSecondsToday(tenant, now) >= quota.cpuSecondsPerDay) {
      throw new QuotaExceeded(`the tenant used its ${quota.cpuSecondsPerDay} CPU-seconds for the last 24 hours`, 'cpuSecondsPerDay', 3600);
    }
    this.counts.get(tenant)!.added++;
    return {
      ...spec,
      memory: spec.memory ?? Math.min(DEFAULT_MEMORY_BYTES, quota.maxMemoryBytes),
      ...(spec.cpu === undefined && spec.cpuset === undefined && { cpu: quota.maxCpu }),
    };
  }

  /** Queue depth, counted at most every 250 ms and advanced locally in between. */
  private queued(tenant: string, now: number): number {
    let c = this.counts.get(tenant);
    if (!c || now - c.at > COUNT_TTL_MS) {
      c = { at: now, queued: this.queuedCount.get(tenant) as number, added: 0 };
      this.counts.set(tenant, c);
    }
    return c.queued + c.added;
  }

  private cpuSecondsToday(tenant: string, now: number): number {
    let b = this.budgets.get(tenant);
    if (!b || now - b.at > 1000) {
      b = { at: now, used: this.cpuUsed.get(tenant, now - 86_400_000) as number };
      this.budgets.set(tenant, b);
    }
    return b.used;
  }

  usage(tenant: string, now = Date.now()) {
    return { queued: this.queuedCount.get(tenant) as number, cpuSecondsLast24h: this.cpuUsed.get(tenant, now - 86_400_000) as number };
  }
}
