import { EventEmitter } from 'node:events';
import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import { allocatableMemory, assign, freeMemory, freeSlots, warmKey, type AgentConn } from '../agents/conn.js';
import type { AgentHub } from '../agents/hub.js';
import { lazyTransaction } from '../db/group-commit.js';
import type { ImageRegistry } from '../images/registry.js';
import { cpusetHighest } from '../jobs/admission.js';
import type { JobSpec } from '../jobs/spec.js';
import type { JobMachine } from '../queue/machine.js';
import type { TenantService } from '../tenants/service.js';
import { encodeRun, runFrameProblem, type RunFrame } from './run-frame.js';

export interface SchedulerEvents {
  'scheduler:error': [{ error: unknown }];
  'job:dispatched': [{ jobId: string; agent: string; fence: number; warm: boolean }];
  /** The gateway ended a queued job itself: its frame would not fit the protocol, or no agent could take it. */
  'job:rejected': [{ jobId: string; reason: 'rejected' | 'unplaceable'; detail: string }];
}

export interface SchedulerOptions {
  tickMs?: number;
  /** Who offers which image: jobs for an image no agent offers end after `placementWaitMs`. */
  images?: ImageRegistry;
  /** How long a queued job may wait while no connected agent could take it (see GatewayConfig). */
  placementWaitMs?: number;
  /** Memory kept back on every agent; placement promises at most the rest. */
  memoryReserveBytes?: number;
}

interface Candidate {
  id: string;
  image: string;
  /** The function it was invoked from, if any: its maxConcurrent caps how many run at once. */
  function: string | null;
  spec: string;
  runAfter: number;
  /** Parsed on first look; a candidate may be looked at in several rounds of a pass. */
  need?: Need;
}

/** One tenant's share of a dispatch pass. */
interface TenantPass {
  /** Jobs it may still start (its maxConcurrent less what runs). */
  room: number;
  queue: Candidate[];
  /** Functions with a maxConcurrent: how many of their jobs run, and the cap. */
  caps: Map<string, { running: number; max: number }>;
  /** Functions at their cap: their jobs wait. */
  full: Set<string>;
}

/** What placement needs of a job, parsed once per candidate. */
interface Need {
  spec: JobSpec;
  memory: number;
  /** Highest CPU its cpuset names, -1 without one. */
  highestCpu: number;
}

/** How often queued jobs are checked for an image no agent offers: the check reads every queued row's image. */
const SWEEP_EVERY_MS = 2000;

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
  private readonly cappedRunning;
  private readonly functionCap;
  private readonly queuedImages;
  private readonly queuedForImage;
  private readonly tickMs: number;
  private readonly placementWaitMs: number;
  private readonly reserve: number;
  private lastSweep = -Infinity;

  constructor(
    private readonly db: Database.Database,
    private readonly machine: JobMachine,
    private readonly hub: AgentHub,
    private readonly tenants: TenantService,
    private readonly log: Logger,
    private readonly o: SchedulerOptions = {},
  ) {
    super();
    this.tickMs = o.tickMs ?? 250;
    this.placementWaitMs = o.placementWaitMs ?? 10 * 60_000;
    this.reserve = o.memoryReserveBytes ?? 0;
    this.tenantsWithWork = db.prepare(`SELECT DISTINCT tenant FROM jobs WHERE state = 'queued' AND run_after <= ?`).pluck();
    // The last parameter is a JSON array of the tenant's functions at their maxConcurrent: their
    // jobs are skipped in SQL, so a backlog of one capped function never hides the tenant's others.
    this.nextForTenant = db.prepare(
      `SELECT id, image, spec, function, run_after AS runAfter FROM jobs
       WHERE tenant = ? AND state = 'queued' AND run_after <= ? AND (function IS NULL OR function NOT IN (SELECT value FROM json_each(?)))
       ORDER BY run_after, id LIMIT ?`,
    );
    // Running jobs are few (bounded by agent slots): counting them per function is cheap.
    this.cappedRunning = db.prepare(
      `SELECT j.function AS name, count(*) AS running, f.max_concurrent AS max FROM jobs j
       JOIN functions f ON f.tenant = j.tenant AND f.name = j.function
       WHERE j.tenant = ? AND j.state = 'running' AND f.max_concurrent IS NOT NULL GROUP BY j.function`,
    );
    this.functionCap = db.prepare(`SELECT max_concurrent FROM functions WHERE tenant = ? AND name = ?`).pluck();
    this.queuedImages = db.prepare(`SELECT DISTINCT image FROM jobs WHERE state = 'queued'`).pluck();
    this.queuedForImage = db.prepare(`SELECT id FROM jobs WHERE state = 'queued' AND image = ? AND run_after <= ? LIMIT 1000`).pluck();
    this.runningByTenant = db.prepare(`SELECT count(*) FROM jobs WHERE tenant = ? AND state = 'running'`).pluck();
  }

  start(): void {
    this.machine.on('job:queued', this.kick);
    this.hub.on('capacity', this.kick);
    this.timer = setInterval(() => {
      this.reap();
      if (this.machine.clock() - this.lastSweep >= SWEEP_EVERY_MS) this.sweepUnplaceable();
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

  /**
   * Ends `unplaceable` the queued jobs whose image no connected agent has offered for the
   * placement wait (and that have waited that long themselves). Runs on the timer, every
   * couple of seconds. Returns jobs ended.
   */
  sweepUnplaceable(): number {
    const now = this.machine.clock();
    this.lastSweep = now;
    const images = this.o.images;
    if (!images) return 0;
    try {
      const outbox: Array<() => void> = [];
      const n = lazyTransaction(this.db, () => {
        let ended = 0;
        for (const image of this.queuedImages.all() as string[]) {
          const since = images.missingSince(image);
          if (since === undefined || now - since < this.placementWaitMs) continue;
          const detail = `no connected agent has offered image "${image}" for ${Math.round((now - since) / 1000)} s`;
          for (const id of this.queuedForImage.all(image, now - this.placementWaitMs) as string[]) {
            if (this.reject(id, 'unplaceable', detail, outbox)) ended++;
          }
        }
        return ended;
      });
      for (const send of outbox) send();
      return n;
    } catch (error) {
      this.log.error({ err: error }, 'unplaceable sweep failed');
      this.emit('scheduler:error', { error });
      return 0;
    }
  }

  /** Ends a queued job without running it; its end is announced after the transaction commits. */
  private reject(jobId: string, reason: 'rejected' | 'unplaceable', detail: string, outbox: Array<() => void>): boolean {
    const tenant = this.machine.reject(jobId, reason, detail);
    if (tenant === undefined) return false;
    this.log.info({ jobId, tenant, reason, detail }, 'job ended without running');
    outbox.push(() => {
      this.machine.announceEnd(jobId, tenant, 'failed');
      this.emit('job:rejected', { jobId, reason, detail });
    });
    return true;
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
    const state = new Map<string, TenantPass>();
    for (const t of order) {
      const room = this.tenants.exists(t) ? this.tenants.quota(t).maxConcurrent - this.runningOf(t) : 0;
      const s: TenantPass = { room, queue: [], caps: new Map(), full: new Set() };
      if (room > 0) {
        for (const r of this.cappedRunning.all(t) as Array<{ name: string; running: number; max: number }>) {
          s.caps.set(r.name, { running: r.running, max: r.max });
          if (r.running >= r.max) s.full.add(r.name);
        }
        s.queue = this.candidates(t, s, now, Math.min(room, free));
      }
      state.set(t, s);
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
          const need = (job.need ??= this.need(job));
          const agent = this.pick(agents, t, job, need);
          if (!agent) {
            if (this.unplaceable(job, need, now, outbox)) {
              s.queue.splice(i--, 1);
              progress = true;
            }
            continue;
          }
          s.queue.splice(i, 1);
          const outcome = this.dispatch(agent, t, job, need, outbox);
          if (outcome === 'sent') {
            s.room--;
            free--;
            dispatched++;
            if (job.function !== null) this.countFunction(t, s, job.function, now, free);
          }
          // A rejected job took no slot: the tenant's next candidate may go in its place.
          if (outcome !== 'lost') progress = true;
          break;
        }
        if (free === 0) break;
      }
    }
    return dispatched;
  }

  /** The tenant's next queued jobs, skipping functions at their maxConcurrent. */
  private candidates(tenant: string, s: TenantPass, now: number, limit: number): Candidate[] {
    return this.nextForTenant.all(tenant, now, JSON.stringify([...s.full]), limit) as Candidate[];
  }

  /**
   * One more of function `fn`'s jobs runs. At its maxConcurrent, the rest of its candidates
   * leave this pass; if that empties the tenant's list, the next ones (of other functions, or
   * ad hoc) are read in their place.
   */
  private countFunction(tenant: string, s: TenantPass, fn: string, now: number, free: number): void {
    let cap = s.caps.get(fn);
    if (!cap) {
      const max = this.functionCap.get(tenant, fn) as number | null | undefined;
      cap = { running: 0, max: max ?? Infinity };
      s.caps.set(fn, cap);
    }
    if (++cap.running < cap.max) return;
    s.full.add(fn);
    s.queue = s.queue.filter((c) => c.function !== fn);
    if (s.queue.length === 0 && s.room > 0 && free > 0) s.queue = this.candidates(tenant, s, now, Math.min(s.room, free));
  }

  private need(job: Candidate): Need {
    const spec = JSON.parse(job.spec) as JobSpec;
    return { spec, memory: spec.memory ?? 0, highestCpu: spec.cpuset === undefined ? -1 : cpusetHighest(spec.cpuset) };
  }

  /** Whether `a` could ever run the job, busy or not: its image, the CPUs its cpuset names, its memory. */
  private fits(a: AgentConn, image: string, need: Need): boolean {
    return a.images.includes(image) && need.highestCpu < a.capacity.cpus && need.memory <= allocatableMemory(a, this.reserve);
  }

  /**
   * A candidate no connected agent could ever take (its image offered but too few CPUs or too
   * little memory anywhere): after the placement wait it ends `unplaceable`. Agents that are
   * merely busy do not count: the job waits for them.
   */
  private unplaceable(job: Candidate, need: Need, now: number, outbox: Array<() => void>): boolean {
    if (now - job.runAfter < this.placementWaitMs) return false;
    const agents = this.hub.agents();
    if (agents.some((a) => this.fits(a, job.image, need))) return false;
    const detail = agents.some((a) => a.images.includes(job.image))
      ? `no connected agent has the ${need.highestCpu >= 0 ? `CPUs (up to CPU ${need.highestCpu}) or ` : ''}memory (${need.memory} bytes) this job asks for`
      : `no connected agent offers image "${job.image}"`;
    return this.reject(job.id, 'unplaceable', detail, outbox);
  }

  private pick(agents: AgentConn[], tenant: string, job: Candidate, need: Need): AgentConn | undefined {
    let best: AgentConn | undefined;
    let bestScore = -1;
    const key = warmKey(tenant, job.image);
    for (const a of agents) {
      if (freeSlots(a) <= 0 || !a.images.includes(job.image)) continue;
      // Never promise an agent more memory than it has (less the reserve), nor CPUs it lacks.
      if (need.memory > freeMemory(a, this.reserve) || need.highestCpu >= a.capacity.cpus) continue;
      // Prefer a warm container for this (tenant, image), then a blank one, then the emptiest agent.
      const score = ((a.warm.get(key) ?? 0) > 0 ? 2000 : 0) + ((a.pool.blank[job.image] ?? 0) > 0 ? 1000 : 0) + freeSlots(a);
      if (score > bestScore) {
        best = a;
        bestScore = score;
      }
    }
    return best;
  }

  /**
   * Claims the job for `agent` and queues its `run` frame. The frame is checked first with the
   * agent's own schema and size limit: a job whose frame the agent would refuse (or whose size
   * would close the link) ends `rejected` as its own failure instead of looping as agent errors.
   */
  private dispatch(agent: AgentConn, tenant: string, job: Candidate, need: Need, outbox: Array<() => void>): 'sent' | 'lost' | 'rejected' {
    const { retries: _retries, callbackUrl: _cb, ...run } = need.spec;
    const frame: RunFrame = { type: 'run', jobId: job.id, fence: 0, tenant, attempt: 1, spec: run };
    const specJson = JSON.stringify(run);
    const problem = runFrameProblem(frame, specJson);
    if (problem) return this.reject(job.id, 'rejected', problem, outbox) ? 'rejected' : 'lost';
    const claim = this.machine.claim(job.id, agent.id);
    if (!claim) return 'lost';
    const key = warmKey(tenant, job.image);
    const warm = (agent.warm.get(key) ?? 0) > 0 && !need.spec.fresh;
    if (warm) agent.warm.set(key, agent.warm.get(key)! - 1);
    assign(agent, job.id, claim.fence, need.memory);
    outbox.push(() => {
      const sent = this.hub.sendEncoded(agent, encodeRun({ ...frame, fence: claim.fence, attempt: claim.n }, specJson));
      // If the send failed the agent is gone; the lease will expire and the job run elsewhere.
      if (sent) this.emit('job:dispatched', { jobId: job.id, agent: agent.id, fence: claim.fence, warm });
    });
    return 'sent';
  }
}
