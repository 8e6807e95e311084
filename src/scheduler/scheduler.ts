import { EventEmitter } from 'node:events';
import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import { freeSlots, warmKey, type AgentConn } from '../agents/conn.js';
import type { AgentHub } from '../agents/hub.js';
import { lazyTransaction } from '../db/group-commit.js';
import type { JobSpec } from '../jobs/spec.js';
import type { JobMachine } from '../queue/machine.js';
import type { TenantService } from '../tenants/service.js';

export interface SchedulerEvents {
  'scheduler:error': [{ error: unknown }];
  'job:dispatched': [{ jobId: string; agent: string; fence: number; warm: boolean }];
}

interface Candidate {
  id: string;
  image: string;
  spec: string;
}

/**
 * Moves queued jobs onto agents: fair across tenants (one job per tenant per round), within each
 * tenant's `maxConcurrent`, onto an agent that has the image and a free slot, preferring one that
 * holds an idle warm container for (tenant, image). It also reaps expired leases.
 *
 * `runOnce()` does one pass and is what tests call; `start()` runs it on every kick (a job queued,
 * a slot freed) and on a timer for backoffs and leases.
 */
export class Scheduler extends EventEmitter<SchedulerEvents> {
  private timer?: NodeJS.Timeout;
  private kicked = false;
  private rotation = 0;
  private readonly tenantsWithWork;
  private readonly nextForTenant;
  private readonly runningByTenant;

  constructor(
    private readonly db: Database.Database,
    private readonly machine: JobMachine,
    private readonly hub: AgentHub,
    private readonly tenants: TenantService,
    private readonly log: Logger,
    private readonly tickMs = 250,
  ) {
    super();
    this.tenantsWithWork = db.prepare(`SELECT DISTINCT tenant FROM jobs WHERE state = 'queued' AND run_after <= ?`).pluck();
    this.nextForTenant = db.prepare(
      `SELECT id, image, spec FROM jobs WHERE tenant = ? AND state = 'queued' AND run_after <= ? ORDER BY run_after, id LIMIT ?`,
    );
    this.runningByTenant = db.prepare(`SELECT count(*) FROM jobs WHERE tenant = ? AND state = 'running'`).pluck();
  }

  start(): void {
    this.machine.on('job:queued', this.kick);
    this.hub.on('capacity', this.kick);
    this.timer = setInterval(() => {
      this.reap();
      this.kick();
    }, this.tickMs);
    this.timer.unref();
  }

  stop(): void {
    this.machine.off('job:queued', this.kick);
    this.hub.off('capacity', this.kick);
    clearInterval(this.timer);
  }

  /** Coalesces bursts of events into one pass per event-loop turn. */
  kick = (): void => {
    if (this.kicked) return;
    this.kicked = true;
    setImmediate(() => {
      this.kicked = false;
      try {
        this.runOnce();
      } catch (error) {
        this.log.error({ err: error }, 'scheduler pass failed');
        this.emit('scheduler:error', { error });
      }
    });
  };

  runningOf(tenant: string): number {
    return this.runningByTenant.get(tenant) as number;
  }

  /**
   * One pass: dispatch until no tenant can place a job. The pass is one transaction, committed
   * without an fsync (claims may be lost in a power cut: the job is then simply queued again);
   * `run` frames go out only after it commits. Returns jobs dispatched.
   */
  runOnce(): number {
    if (!this.hub.agents().some((a) => freeSlots(a) > 0)) return 0;
    // Most passes after a job ends find nothing to do: find that out without a transaction.
    if (this.tenantsWithWork.all(this.machine.clock()).length === 0) return 0;
    const outbox: Array<() => void> = [];
    const n = lazyTransaction(this.db, () => this.pass(outbox));
    for (const send of outbox) send();
    return n;
  }

  /** Expired leases go back to the queue; runs on the timer, not on every kick. */
  reap(): number {
    try {
      return this.machine.reapExpired();
    } catch (error) {
      this.log.error({ err: error }, 'lease reaper failed');
      this.emit('scheduler:error', { error });
      return 0;
    }
  }

  private pass(outbox: Array<() => void>): number {
    const agents = this.hub.agents().filter((a) => freeSlots(a) > 0);
    let free = agents.reduce((n, a) => n + freeSlots(a), 0);
    if (free === 0) return 0;
    const now = this.machine.clock();
    const tenants = this.tenantsWithWork.all(now) as string[];
    if (tenants.length === 0) return 0;

    // Rotate the starting tenant between passes so no tenant is always first.
    const start = this.rotation++ % tenants.length;
    const order = [...tenants.slice(start), ...tenants.slice(0, start)];
    const state = new Map<string, { room: number; queue: Candidate[] }>();
    for (const t of order) {
      const room = this.tenants.exists(t) ? this.tenants.quota(t).maxConcurrent - this.runningOf(t) : 0;
      state.set(t, { room, queue: room > 0 ? (this.nextForTenant.all(t, now, Math.min(room, free)) as Candidate[]) : [] });
    }

    let dispatched = 0;
    let progress = true;
    while (progress && free > 0) {
      progress = false;
      for (const t of order) {
        const s = state.get(t)!;
        if (s.room <= 0) continue;
        // The first of this tenant's candidates that some agent can take.
        for (let i = 0; i < s.queue.length; i++) {
          const job = s.queue[i]!;
          const agent = this.pick(agents, t, job);
          if (!agent) continue;
          s.queue.splice(i, 1);
          if (this.dispatch(agent, t, job, outbox)) {
            s.room--;
            free--;
            dispatched++;
            progress = true;
          }
          break;
        }
        if (free === 0) break;
      }
    }
    return dispatched;
  }

  private pick(agents: AgentConn[], tenant: string, job: Candidate): AgentConn | undefined {
    let best: AgentConn | undefined;
    let bestScore = -1;
    const key = warmKey(tenant, job.image);
    for (const a of agents) {
      if (freeSlots(a) <= 0 || !a.images.includes(job.image)) continue;
      // Prefer a warm container for this (tenant, image), then a blank one, then the emptiest agent.
      const score = ((a.warm.get(key) ?? 0) > 0 ? 2000 : 0) + ((a.pool.blank[job.image] ?? 0) > 0 ? 1000 : 0) + freeSlots(a);
      if (score > bestScore) {
        best = a;
        bestScore = score;
      }
    }
    return best;
  }

  private dispatch(agent: AgentConn, tenant: string, job: Candidate, outbox: Array<() => void>): boolean {
    const claim = this.machine.claim(job.id, agent.id);
    if (!claim) return false;
    const spec = JSON.parse(job.spec) as JobSpec;
    const key = warmKey(tenant, job.image);
    const warm = (agent.warm.get(key) ?? 0) > 0 && !spec.fresh;
    if (warm) agent.warm.set(key, agent.warm.get(key)! - 1);
    agent.running.set(job.id, claim.fence);
    const { retries: _retries, callbackUrl: _cb, ...run } = spec;
    outbox.push(() => {
      const sent = this.hub.sendTo(agent, { type: 'run', jobId: job.id, fence: claim.fence, tenant, attempt: claim.n, spec: run });
      // If the send failed the agent is gone; the lease will expire and the job run elsewhere.
      if (sent) this.emit('job:dispatched', { jobId: job.id, agent: agent.id, fence: claim.fence, warm });
    });
    return true;
  }
}
