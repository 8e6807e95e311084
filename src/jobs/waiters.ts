import type { JobMachine } from '../queue/machine.js';
import type { TenantHolds } from './holds.js';
import { FINAL_STATES, type JobState } from '../queue/states.js';

/**
 * Callers holding on a job's end (`?wait=N`). Resolves true when the job ended and its end is on
 * disk, false when the wait ran out.
 */
export class JobWaiters {
  private readonly waiting = new Map<string, Set<(ended: boolean) => void>>();

  constructor(
    private readonly machine: JobMachine,
    /** Resolves once what was committed so far is durable (Store.durable). */
    private readonly durable: () => Promise<void>,
    /** A tenant past its holds is answered at once: a wait is a courtesy, never a refusal. */
    private readonly holds: TenantHolds,
  ) {
    machine.on('job:ended', ({ jobId }) => {
      if (this.waiting.has(jobId)) this.releaseWhenDurable(jobId);
    });
  }

  /**
   * Holds until job `jobId` ends (true) or `ms` pass (false). The job's state is read once the
   * waiter is in place: a job dispatched at commit can end (or be deleted) before its submitter
   * starts waiting, and its `job:ended` is then already gone. A tenant already holding its
   * maximum of requests open does not wait (false at once).
   */
  wait(tenant: string, jobId: string, ms: number, signal?: AbortSignal): Promise<boolean> {
    // A client already gone (a submit's wait asked for after its commit) holds nothing.
    if (signal?.aborted) return Promise.resolve(false);
    const release = this.holds.take(tenant);
    if (!release) return Promise.resolve(false);
    return new Promise((resolve) => {
      const set = this.waiting.get(jobId) ?? new Set();
      this.waiting.set(jobId, set);
      const done = (ended: boolean) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        set.delete(done);
        if (set.size === 0) this.waiting.delete(jobId);
        release();
        resolve(ended);
      };
      const onAbort = () => done(false);
      const timer = setTimeout(() => done(false), ms);
      signal?.addEventListener('abort', onAbort, { once: true });
      set.add(done);
      const state = (this.machine.sql.stateOf.get({ jobId }) as { state: JobState } | undefined)?.state;
      if (state === undefined || FINAL_STATES.has(state)) this.releaseWhenDurable(jobId);
    });
  }

  private releaseWhenDurable(jobId: string): void {
    this.durable().then(
      () => this.release(jobId, true),
      () => this.release(jobId, false),
    );
  }

  private release(jobId: string, ended: boolean): void {
    for (const done of [...(this.waiting.get(jobId) ?? [])]) done(ended);
  }
}
