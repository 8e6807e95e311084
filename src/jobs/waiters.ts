import type { JobMachine } from '../queue/machine.js';

/**
 * Callers holding on a job's end (`?wait=N`, live output). Resolves true when the job ended,
 * false when the wait ran out.
 */
export class JobWaiters {
  private readonly waiting = new Map<string, Set<(ended: boolean) => void>>();

  constructor(machine: JobMachine) {
    machine.on('job:ended', ({ jobId }) => this.release(jobId, true));
  }

  wait(jobId: string, ms: number, signal?: AbortSignal): Promise<boolean> {
    return new Promise((resolve) => {
      const set = this.waiting.get(jobId) ?? new Set();
      this.waiting.set(jobId, set);
      const done = (ended: boolean) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        set.delete(done);
        if (set.size === 0) this.waiting.delete(jobId);
        resolve(ended);
      };
      const onAbort = () => done(false);
      const timer = setTimeout(() => done(false), ms);
      signal?.addEventListener('abort', onAbort, { once: true });
      set.add(done);
    });
  }

  private release(jobId: string, ended: boolean): void {
    for (const done of [...(this.waiting.get(jobId) ?? [])]) done(ended);
  }
}
