import { EventEmitter } from 'node:events';
import type Database from 'better-sqlite3';
import { LeaseLost } from '../errors/domain.js';
import { decideAfterAttempt } from './retry.js';
import { prepareQueueSql, type QueueSql } from './sql.js';
import type { AttemptResult, JobReason, JobState } from './states.js';

export type Clock = () => number;

export interface NewJob {
  id: string;
  tenant: string;
  name: string | null;
  /** The function it was invoked from, and that function's version; absent for an ad-hoc job. */
  function?: string | null;
  functionVersion?: number | null;
  image: string;
  /** The spec as JSON, without stdin. */
  spec: string;
  stdin?: Buffer | null;
  memory?: number | null;
  cpu?: number | null;
  cpuset?: string | null;
  maxOutputBytes?: number | null;
  callbackUrl?: string | null;
  retries: number;
  createdAt: number;
}

export interface Claim {
  jobId: string;
  tenant: string;
  n: number;
  fence: number;
}

export interface MachineEvents {
  'job:queued': [{ jobId: string; tenant: string }];
  'job:ended': [{ jobId: string; tenant: string; state: JobState }];
  /** A running job must be stopped on its agent. */
  'job:cancel': [{ jobId: string; agent: string; fence: number }];
  'attempt:ended': [{ jobId: string; tenant: string; agent: string; result: AttemptResult }];
}

/** An attempt's end, as a hook inside the transition's transaction sees it. */
export interface AttemptEnd {
  jobId: string;
  tenant: string;
  fence: number;
  result: AttemptResult;
  now: number;
  /** The job's final state, or undefined when it went back to the queue. */
  final: JobState | undefined;
  /** Set when the job was deleted while this attempt ran: no agent will report what it used. */
  deleted?: boolean;
}

/** A job's end (any final transition), as a hook inside the transition's transaction sees it. */
export interface JobEnd {
  jobId: string;
  tenant: string;
  state: JobState;
  now: number;
}

/** One event as raised inside a transition: its name and payload, emitted after the commit. */
type MachineEvent = { [K in keyof MachineEvents]: [K, ...MachineEvents[K]] }[keyof MachineEvents];

export interface MachineOptions {
  clock?: Clock;
  leaseMs?: number;
  backoffBaseMs?: number;
}

/**
 * The job state machine. It alone writes a job's state; each transition is one guarded
 * statement, and a guard that matches no row means the caller lost the lease.
 *
 *   queued → running (claim) → succeeded | failed | timed_out | cancelled (finish)
 *   running → queued (finish with retries left, or reapExpired)
 *   queued → cancelled (cancel)
 *   queued → failed (reject: the gateway will not run it)
 *
 * Events leave only after the transition's transaction commits: a transition in the machine's
 * own transaction emits after its COMMIT; one inside a caller's transaction must run in
 * `collect` (see commitTransitions), whose events the caller emits once the write is committed
 * (durable, for a durable write) — a listener never acts on a write that rolled back.
 */
export class JobMachine extends EventEmitter<MachineEvents> {
  readonly sql: QueueSql;
  readonly clock: Clock;
  readonly leaseMs: number;
  private readonly backoffBaseMs: number;
  private readonly attemptHooks: Array<(e: AttemptEnd) => void> = [];
  private readonly endHooks: Array<(e: JobEnd) => void> = [];
  /** Events of the transitions under way, innermost `collect` last. */
  private readonly collectors: MachineEvent[][] = [];

  constructor(
    private readonly db: Database.Database,
    o: MachineOptions = {},
  ) {
    super();
    // Every open output follow listens here: bounded by the holds each tenant may have, not by 10.
    this.setMaxListeners(0);
    this.sql = prepareQueueSql(db);
    this.clock = o.clock ?? Date.now;
    this.leaseMs = o.leaseMs ?? 15_000;
    this.backoffBaseMs = o.backoffBaseMs ?? 1000;
  }

  /**
   * Runs `fn` atomically: inside the caller's transaction when there is one (every transition
   * checks its guard before its first write, so a LeaseLost leaves nothing half-done), else in
   * its own. Measured: a savepoint per transition cost ~25% of queue throughput (bench/queue.ts).
   */
  private atomic<T>(fn: () => T): T {
    if (this.db.inTransaction) return fn();
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const out = this.collect(fn);
      this.db.exec('COMMIT');
      out.emit();
      return out.value;
    } catch (err) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      throw err;
    }
  }

  /**
   * Runs `fn`, which may call transitions inside the caller's transaction, and keeps the events
   * they raise: the caller calls `emit` once that transaction has committed, and drops them if it
   * rolls back (a throw from `fn` drops them here).
   */
  collect<T>(fn: () => T): { value: T; emit: () => void } {
    const events: MachineEvent[] = [];
    this.collectors.push(events);
    try {
      const value = fn();
      return { value, emit: () => events.forEach((e) => (this.emit as (...a: unknown[]) => boolean)(...e)) };
    } finally {
      this.collectors.pop();
    }
  }

  /** Raises an event for after the commit of the transaction it happened in. */
  private raise(...e: MachineEvent): void {
    const events = this.collectors[this.collectors.length - 1];
    if (events) return void events.push(e);
    // Its commit is someone else's and could still roll back: a listener told now could act on
    // a write that never happened.
    throw new Error('a job transition inside a caller\'s transaction must run in JobMachine.collect');
  }

  /**
   * Registers work that must commit with every attempt's end (usage metering): it runs inside
   * the same transaction, so it is never lost nor done for an end that rolled back. A hook that
   * throws rolls the transition back.
   */
  onAttemptEnd(hook: (e: AttemptEnd) => void): void {
    this.attemptHooks.push(hook);
  }

  /** Registers work that must commit with every job's final transition (the callback outbox). */
  onJobEnd(hook: (e: JobEnd) => void): void {
    this.endHooks.push(hook);
  }

  private ended(e: JobEnd): void {
    for (const h of this.endHooks) h(e);
  }

  /** Inserts a job as `queued`. Call inside the caller's transaction; emits after it commits. */
  enqueue(job: NewJob): void {
    this.sql.insertJob.run({
      stdin: null,
      memory: null,
      cpu: null,
      cpuset: null,
      maxOutputBytes: null,
      callbackUrl: null,
      ...job,
      function: job.function ?? null,
      functionVersion: job.functionVersion ?? null,
      runAfter: job.createdAt,
    });
  }

  /** Tells listeners a committed job is waiting (the scheduler wakes on this). */
  announce(jobId: string, tenant: string): void {
    this.emit('job:queued', { jobId, tenant });
  }

  private lastFence = 0;

  /** Microseconds of wall time, strictly increasing within this process. */
  private nextFenceFloor(): number {
    this.lastFence = Math.max(this.lastFence + 1, Date.now() * 1000);
    return this.lastFence;
  }

  /**
   * queued → running on `agent`, creating attempt n with a fresh fence. Undefined if the job is
   * not claimable. Fences grow with the wall clock (µs), not only by one, so a claim lost in a
   * crash (claims are committed without their own fsync) can never hand out a fence again.
   */
  claim(jobId: string, agent: string): Claim | undefined {
    const now = this.clock();
    return this.atomic(() => {
      const row = this.sql.claim.get({ id: jobId, agent, leaseExpiresAt: now + this.leaseMs, now, fenceFloor: this.nextFenceFloor() }) as
        | { tenant: string; fence: number; n: number }
        | undefined;
      if (!row) return undefined;
      this.sql.insertAttempt.run({ jobId, n: row.n, tenant: row.tenant, agent, fence: row.fence, now });
      return { jobId, tenant: row.tenant, n: row.n, fence: row.fence };
    });
  }

  /**
   * Records that the attempt began in `container` (at `now`, by default the clock's now). With
   * `agent`, only when that agent holds the attempt: one agent cannot touch another's.
   */
  start(jobId: string, fence: number, container: string, now = this.clock(), agent?: string): void {
    this.atomic(() => {
      if (this.sql.startJob.run({ jobId, fence, now, agent: agent ?? null }).changes === 0) throw new LeaseLost(`attempt of ${jobId} is no longer current`);
      this.sql.startAttempt.run({ jobId, fence, container, now });
    });
  }

  /**
   * Extends the lease of attempt (jobId, fence) held by `agent`. Undefined when that agent does
   * not hold it as the job's current attempt; otherwise whether a cancel waits for it.
   */
  renewOne(jobId: string, fence: number, agent: string): { cancelRequested: boolean } | undefined {
    const row = this.sql.renewJob.get({ jobId, fence, agent, leaseExpiresAt: this.clock() + this.leaseMs }) as { cancelRequested: number } | undefined;
    return row && { cancelRequested: row.cancelRequested === 1 };
  }

  /**
   * Gives every running attempt a full lease from now: when the gateway starts, and when writes
   * work again after a full disk refused them. While the gateway was down, or could not record a
   * heartbeat, no agent could renew anything, so leases that ran out then say nothing of the
   * agents: each gets a lease to dial again and report what it runs (and the results it kept),
   * instead of its attempts being re-run at the first reap. Returns the attempts renewed.
   */
  renewAll(): number {
    return this.sql.renewAll.run({ leaseExpiresAt: this.clock() + this.leaseMs }).changes;
  }

  /** The memory limit a job runs with (0 if unknown: jobs from before limits were always filled). */
  memoryOf(jobId: string): number {
    const m = this.sql.memoryOf.get(jobId);
    return typeof m === 'number' ? m : 0;
  }

  /** Whether (jobId, fence) is the current attempt of a running job (and, with `agent`, held by it). */
  isCurrent(jobId: string, fence: number, agent?: string): boolean {
    return this.sql.runningForFence.get({ jobId, fence, agent: agent ?? null }) !== undefined;
  }

  /**
   * Ends the attempt (jobId, fence) with `result` and moves the job on: to its final state, or
   * back to `queued` after a backoff. Throws LeaseLost if the attempt is not current, or, with
   * `agent`, not held by that agent.
   */
  finish(jobId: string, fence: number, result: AttemptResult, agent?: string): JobState {
    const now = this.clock();
    return this.atomic(() => {
      const job = this.sql.runningForFence.get({ jobId, fence, agent: agent ?? null }) as
        | { tenant: string; retries: number; failures: number; platformFailures: number; cancelRequested: number }
        | undefined;
      if (!job) throw new LeaseLost(`attempt of ${jobId} is no longer current`);
      const decision = decideAfterAttempt(
        { result, cancelRequested: job.cancelRequested === 1, retries: job.retries, failures: job.failures, platformFailures: job.platformFailures },
        this.backoffBaseMs,
      );
      const cols = {
        jobId,
        fence,
        now,
        exitCode: result.exitCode,
        signal: result.signal,
        reason: result.reason,
        failures: decision.failures,
        platformFailures: decision.platformFailures,
      };
      this.sql.endAttempt.run({ ...cols, cpuSeconds: result.cpuSeconds ?? null, peakMemoryBytes: result.peakMemoryBytes ?? null });
      if (decision.kind === 'requeue') {
        this.sql.requeueJob.run({ ...cols, runAfter: now + decision.delayMs });
        for (const h of this.attemptHooks) h({ jobId, tenant: job.tenant, fence, result, now, final: undefined });
        this.raise('job:queued', { jobId, tenant: job.tenant });
        return 'queued';
      }
      this.sql.finishJob.run({ ...cols, state: decision.state });
      for (const h of this.attemptHooks) h({ jobId, tenant: job.tenant, fence, result, now, final: decision.state });
      this.ended({ jobId, tenant: job.tenant, state: decision.state, now });
      this.raise('job:ended', { jobId, tenant: job.tenant, state: decision.state });
      return decision.state;
    });
  }

  /**
   * queued → failed without an attempt, for a job the gateway will not run: its run frame does
   * not fit the agent protocol (`rejected`), or no connected agent could take it for the
   * placement wait (`unplaceable`). The failure is the job's own, not a platform retry. Returns
   * the tenant, or undefined when the job was no longer queued. It does not emit: the caller
   * runs inside a transaction and calls `announceEnd` after it commits.
   */
  reject(jobId: string, reason: Extract<JobReason, 'rejected' | 'unplaceable'>, detail: string): string | undefined {
    const now = this.clock();
    const row = this.sql.rejectQueued.get({ jobId, reason, detail, now }) as { tenant: string } | undefined;
    if (row) this.ended({ jobId, tenant: row.tenant, state: 'failed', now });
    return row?.tenant;
  }

  /** Tells listeners a committed transition ended a job (waiters, callbacks). */
  announceEnd(jobId: string, tenant: string, state: JobState): void {
    this.emit('job:ended', { jobId, tenant, state });
  }

  /**
   * Cancels a job: a queued one ends `cancelled` at once; a running one is marked and its agent
   * told, and it ends `cancelled` when the agent reports or its lease runs out.
   */
  cancel(jobId: string): JobState | 'cancelling' | undefined {
    const now = this.clock();
    return this.atomic(() => {
      const queued = this.sql.cancelQueued.get({ jobId, now }) as { tenant: string } | undefined;
      if (queued) {
        this.ended({ jobId, tenant: queued.tenant, state: 'cancelled', now });
        this.raise('job:ended', { jobId, tenant: queued.tenant, state: 'cancelled' });
        return 'cancelled';
      }
      // Stays requested until the attempt ends: the hub sends it again while its agent reports it.
      const running = this.sql.requestCancel.get({ jobId }) as { agent: string; fence: number } | undefined;
      if (running) {
        this.raise('job:cancel', { jobId, agent: running.agent, fence: running.fence });
        return 'cancelling';
      }
      return (this.sql.stateOf.get({ jobId }) as { state: JobState } | undefined)?.state;
    });
  }

  /** Deletes a job and its output, stopping it first if it runs. */
  remove(jobId: string): boolean {
    const row = this.sql.stateOf.get({ jobId }) as { state: JobState; agent: string | null; fence: number; tenant: string } | undefined;
    if (!row) return false;
    this.atomic(() => {
      if (row.state === 'running') {
        // Its usage must still be charged: the agent's report will find no job to end.
        const result = { exitCode: null, signal: null, reason: 'cancelled' as const, detail: 'deleted while running' };
        const now = this.clock();
        for (const h of this.attemptHooks) h({ jobId, tenant: row.tenant, fence: row.fence, result, now, final: 'cancelled', deleted: true });
      }
      this.sql.deleteJob.run({ jobId });
      if (row.state === 'running' && row.agent) this.raise('job:cancel', { jobId, agent: row.agent, fence: row.fence });
      if (row.state === 'queued' || row.state === 'running') this.raise('job:ended', { jobId, tenant: row.tenant, state: 'cancelled' });
    });
    return true;
  }

  /** Attempts whose lease ran out go back to the queue (or end, if cancelled) without using up retries. */
  reapExpired(): number {
    const rows = this.sql.expired.all({ now: this.clock() }) as Array<{ id: string; fence: number }>;
    for (const r of rows) {
      try {
        this.finish(r.id, r.fence, { exitCode: null, signal: null, reason: 'agent_error', detail: 'lease expired' });
      } catch (err) {
        if (!(err instanceof LeaseLost)) throw err;
      }
    }
    return rows.length;
  }
}
