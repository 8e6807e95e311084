import type { ChildProcess } from 'node:child_process';

/** How a supervised child ended. */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** What the supervisor needs of a child: a way to ask it to stop, and its end. */
export interface Supervised {
  pid: number | undefined;
  exited: Promise<ExitStatus>;
  /** Asks the child to stop (SIGTERM for a process); `exited` settles when it has. */
  stop(): void;
}

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface Backoff {
  /** Delay before the first restart. */
  initialMs: number;
  /** Doubling stops here. */
  maxMs: number;
  /** A child that stayed up this long counts as healthy: the next restart starts from `initialMs` again. */
  resetAfterMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 500, maxMs: 30_000, resetAfterMs: 60_000 };

export interface SupervisorDeps {
  /** Used in log lines, e.g. "the local agent". */
  name: string;
  spawn: () => Supervised;
  log: (line: string) => void;
  backoff?: Backoff;
  clock?: Clock;
  /** In [0, 1); spreads restarts so that several supervisors do not retry in step. */
  random?: () => number;
}

/**
 * The delay before restart number `failures` (0-based): `initialMs` doubling up to `maxMs`, then
 * jittered down to between half and all of it, so a restart never comes sooner than half the step.
 */
export function restartDelay(b: Backoff, failures: number, random: number): number {
  const step = Math.min(b.maxMs, b.initialMs * 2 ** Math.min(failures, 30));
  return Math.round(step / 2 + (step / 2) * random);
}

/**
 * Keeps one child running: when it exits without being asked to, logs it and starts a new one
 * after an exponential backoff with jitter. `stop()` ends the child and every restart.
 *
 * @example
 *   const agent = new Supervisor({ name: 'the local agent', spawn: () => childOf(fork(...)), log });
 *   agent.start();          // or agent.start(child) to watch a child already checked by the caller
 *   await agent.stop();     // SIGTERM, wait for the exit, no restart
 */
export class Supervisor {
  private readonly backoff: Backoff;
  private readonly clock: Clock;
  private readonly random: () => number;
  private current: Supervised | undefined;
  private startedAt = 0;
  /** Restarts since the child last stayed up for `resetAfterMs`. */
  private failures = 0;
  private timer: unknown;
  private stopping = false;

  constructor(private readonly deps: SupervisorDeps) {
    this.backoff = deps.backoff ?? DEFAULT_BACKOFF;
    this.clock = deps.clock ?? realClock;
    this.random = deps.random ?? Math.random;
  }

  /** The running child, if any (none while a restart is pending). */
  get child(): Supervised | undefined {
    return this.current;
  }

  /** Starts the first child, or watches `first` if the caller started it already. */
  start(first?: Supervised): void {
    if (first) this.watch(first);
    else this.runOnce();
  }

  /** Starts one child now; a spawn that throws counts as an exit and is retried the same way. */
  runOnce(): void {
    this.timer = undefined;
    if (this.stopping) return;
    let child: Supervised;
    try {
      child = this.deps.spawn();
    } catch (err) {
      this.startedAt = this.clock.now();
      this.exited(undefined, `could not be started (${err instanceof Error ? err.message : String(err)})`);
      return;
    }
    this.watch(child);
  }

  /** Stops the child (if running) and cancels any pending restart. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    const child = this.current;
    if (!child) return;
    child.stop();
    await child.exited;
  }

  private watch(child: Supervised): void {
    this.current = child;
    this.startedAt = this.clock.now();
    void child.exited.then((s) => {
      if (this.current !== child) return;
      this.current = undefined;
      if (!this.stopping) this.exited(child.pid, s.signal ? `was killed by ${s.signal}` : `exited with code ${s.code}`);
    });
  }

  private exited(pid: number | undefined, how: string): void {
    if (this.clock.now() - this.startedAt >= this.backoff.resetAfterMs) this.failures = 0;
    const delay = restartDelay(this.backoff, this.failures++, this.random());
    this.deps.log(`${this.deps.name}${pid ? ` (pid ${pid})` : ''} ${how}; restarting it in ${(delay / 1000).toFixed(1)} s`);
    this.timer = this.clock.setTimeout(() => this.runOnce(), delay);
  }
}

/** Adapts a child process: `exited` settles on its exit, or at once if it could not be spawned. */
export function childOf(p: ChildProcess): Supervised {
  const exited = new Promise<ExitStatus>((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) return resolve({ code: p.exitCode, signal: p.signalCode });
    p.once('exit', (code, signal) => resolve({ code, signal }));
    // 'error' without a pid means the spawn failed and no 'exit' will follow; other errors (a
    // failed kill or IPC send) leave the child running, and must not crash this process.
    p.on('error', () => {
      if (p.pid === undefined) resolve({ code: null, signal: null });
    });
  });
  return { pid: p.pid, exited, stop: () => void p.kill('SIGTERM') };
}
