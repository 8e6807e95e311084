import type Database from 'better-sqlite3';
import { allocatableMemory, type AgentConn } from '../agents/conn.js';
import { LimitExceeded, QuotaExceeded, Unprocessable } from '../errors/domain.js';
import type { ImageRegistry } from '../images/registry.js';
import type { Quota } from '../tenants/quota.js';
import { RateLimiter } from '../tenants/rate.js';
import { msToNextUtcDay } from '../usage/meter.js';
import type { UsageService } from '../usage/service.js';
import { MIN_MEMORY_BYTES, parseCpuset, type JobSpec } from './spec.js';

export const DEFAULT_MEMORY_BYTES = 256 * 1024 ** 2;
const COUNT_TTL_MS = 250;

/** How many CPUs a cpuset such as "0-1,4" names (0 for one that does not parse: the schema refuses those). */
export function cpusetSize(cpuset: string): number {
  const r = parseCpuset(cpuset);
  return 'cpus' in r ? r.cpus.length : 0;
}

/** The highest CPU number in a cpuset (-1 for one that does not parse: the schema refuses those). */
export function cpusetHighest(cpuset: string): number {
  const r = parseCpuset(cpuset);
  return 'cpus' in r ? (r.cpus[r.cpus.length - 1] ?? -1) : -1;
}

/**
 * Stored quotas from before limits had to be positive may hold a zero that would accept jobs
 * no one can run (maxConcurrent 0) or never accept any (maxQueued 0): refuse the job naming
 * the limit, so the admin sees what to fix.
 */
function unusableQuota(q: Quota): void {
  const zero = (['maxConcurrent', 'maxTimeoutSeconds', 'maxCpu', 'maxOutputBytes', 'ratePerMinute', 'maxQueued', 'cpuSecondsPerDay'] as const).find(
    (k) => q[k] !== null && !(q[k]! > 0),
  );
  if (zero) throw new LimitExceeded(`the tenant's ${zero} is ${q[zero]}: no job can run; an admin must raise it`, zero, zero);
  if (q.maxMemoryBytes < MIN_MEMORY_BYTES) {
    throw new LimitExceeded(`the tenant's maxMemoryBytes (${q.maxMemoryBytes}) is below the smallest job (${MIN_MEMORY_BYTES} bytes)`, 'maxMemoryBytes', 'maxMemoryBytes');
  }
}

/**
 * Quota admission for a new job: the per-job maxima (422 naming the limit), then the limits that
 * pass with time — rate, queue depth, daily CPU budget (429 with Retry-After). It also fills the
 * limits the job left unset from the tenant's quota, so every job runs bounded.
 */
export class Admission {
  private readonly rate = new RateLimiter();
  private readonly queuedCount;
  private readonly counts = new Map<string, { at: number; queued: number; added: number }>();

  constructor(
    db: Database.Database,
    private readonly images: ImageRegistry,
    /** The agents connected now: a job none of them could ever take is refused at submit. */
    private readonly agents: () => readonly AgentConn[] = () => [],
    private readonly memoryReserveBytes = 0,
    /** Today's CPU-seconds per tenant (usage_daily plus running attempts); without it there is no budget check. */
    private readonly usage?: UsageService,
  ) {
    this.queuedCount = db.prepare(`SELECT count(*) AS n FROM jobs WHERE tenant = ? AND state = 'queued'`).pluck();
  }

  /**
   * The per-job checks alone: whether a job with `spec` could ever run for a tenant with `quota`
   * (image offered, each limit within the tenant's maxima, some connected agent big enough).
   * Returns the spec with unset limits filled; throws LimitExceeded/Unprocessable naming the field.
   * Saving a function runs these too, so a function that could never run is refused when saved.
   */
  runnable(spec: JobSpec, quota: Quota): JobSpec {
    if (!this.images.known(spec.image)) throw new Unprocessable(`image "${spec.image}" is not offered by any agent`, 'image');
    // Containers have no network interface but lo; no policy grants one yet.
    if (spec.network) throw new Unprocessable('network access is not allowed by this gateway', 'network');
    if (spec.callbackUrl !== undefined) {
      const u = new URL(spec.callbackUrl);
      // The job view shows the URL to anyone who can read the job, and the gateway would send the
      // credentials to wherever the name resolves: a receiver authenticates by the signature instead.
      if (u.username || u.password) throw new Unprocessable('callbackUrl must not carry credentials (user:pass@)', 'callbackUrl');
    }
    unusableQuota(quota);
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
    const filled: JobSpec = {
      ...spec,
      memory: spec.memory ?? Math.min(DEFAULT_MEMORY_BYTES, quota.maxMemoryBytes),
      ...(spec.cpu === undefined && spec.cpuset === undefined && { cpu: quota.maxCpu }),
    };
    this.fitsSomeAgent(filled);
    return filled;
  }

  /** Checks `spec` against `quota` and fills unset limits; throws a domain error when it may not run. */
  admit(tenant: string, spec: JobSpec, quota: Quota, now = Date.now()): JobSpec {
    const filled = this.runnable(spec, quota);
    if (quota.ratePerMinute !== null) {
      const r = this.rate.take(tenant, quota.ratePerMinute, now);
      if (!r.ok) throw new QuotaExceeded(`more than ${quota.ratePerMinute} submissions a minute`, 'ratePerMinute', r.retryAfter);
    }
    const queued = this.queued(tenant, now);
    if (quota.maxQueued !== null && queued >= quota.maxQueued) {
      throw new QuotaExceeded(`the tenant already has ${quota.maxQueued} jobs queued`, 'maxQueued', 5);
    }
    if (quota.cpuSecondsPerDay !== null && this.cpuSecondsToday(tenant, now) >= quota.cpuSecondsPerDay) {
      // The budget is per UTC day, running attempts included: it comes back at midnight UTC.
      throw new QuotaExceeded(`the tenant used its ${quota.cpuSecondsPerDay} CPU-seconds for today (UTC)`, 'cpuSecondsPerDay', msToNextUtcDay(now) / 1000);
    }
    this.counts.get(tenant)!.added++;
    return filled;
  }

  /**
   * A job whose CPUs or memory no connected agent has is refused now rather than queued to wait
   * for a bigger agent. With no agent connected nothing is known, and the job may wait; the
   * scheduler ends it `unplaceable` if no agent able to take it comes within the placement wait.
   */
  private fitsSomeAgent(spec: JobSpec): void {
    const agents = this.agents();
    if (agents.length === 0) return;
    if (spec.cpuset !== undefined) {
      const cpus = Math.max(...agents.map((a) => a.capacity.cpus));
      const highest = cpusetHighest(spec.cpuset);
      if (highest >= cpus) throw new Unprocessable(`cpuset names CPU ${highest}, but no agent has more than ${cpus} CPUs (0-${Math.floor(cpus) - 1})`, 'cpuset');
    }
    const memory = Math.max(...agents.map((a) => allocatableMemory(a, this.memoryReserveBytes)));
    if (spec.memory! > memory) {
      throw new Unprocessable(`memory ${spec.memory} bytes is more than any agent can allocate (at most ${memory} bytes)`, 'memory');
    }
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

  /**
   * Today's CPU-seconds, read on every submission: one primary-key read of usage_daily and the
   * tenant's running attempts (at most its maxConcurrent), cheap enough that no cache can let a
   * burst past a budget an earlier job has just used up.
   */
  private cpuSecondsToday(tenant: string, now: number): number {
    return this.usage?.cpuToday(tenant, now) ?? 0;
  }
}
