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
  /** Asks the child to take its stop to `level` (see StopSignals; 1 when omitted); `exited` settles when it has stopped. */
  stop(level?: StopLevel): void;
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
    child.stop(1);
    await child.exited;
  }

  /** Takes the running child's stop further (level 2: no more waiting, 3: exit at once); `stop()` still waits for its exit. */
  escalate(level: StopLevel): void {
    this.current?.stop(level);
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

/**
 * Adapts a child process: `exited` settles on its exit, or at once if it could not be spawned.
 * A child with an IPC channel is told the stop level in a message (see `stopLevelOf`) rather
 * than signalled: signals count up, and a child that also gets the signal meant for its parent
 * (a control-group kill) would take its parent's word as one more.
 */
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
  const stop = (level: StopLevel = 1) => {
    if (p.connected) p.send({ corral: 'stop', level } satisfies StopWord, () => undefined);
    else p.kill('SIGTERM');
  };
  return { pid: p.pid, exited, stop };
}

/** How far a stop has gone: 1 stops politely, 2 stops waiting for running work, 3 exits at once. */
export type StopLevel = 1 | 2 | 3;

/** A parent's word to a forked child about its stop (over the IPC channel). */
interface StopWord {
  corral: 'stop';
  level: StopLevel;
}

/** The stop level a parent's IPC message asks for, or undefined for any other message. */
export function stopLevelOf(m: unknown): StopLevel | undefined {
  const w = m as Partial<StopWord> | null;
  return w?.corral === 'stop' && (w.level === 1 || w.level === 2 || w.level === 3) ? w.level : undefined;
}

/** What a process does at each level of its stop. */
export interface StopSteps {
  /** Level 1: the polite stop (drain, then clean up). Resolves when everything is cleaned up. */
  stop(): Promise<void>;
  /**
   * Level 2: stop waiting for running work (`StopSignals.hurried` settles too); the cleanup
   * `stop()` goes on to do still runs to its end.
   */
  hurry?(): void;
  /** Level 3: the process exits as soon as this settles; says what is left behind. */
  abandon(): string | Promise<string>;
}

/**
 * Signal-safe stopping. Every SIGINT or SIGTERM takes the stop one level further: the first runs
 * `stop()` and exits 0 when it is done; the second runs `hurry()` and exits 1 once the cleanup is
 * done; the third exits 1 at once, after saying what `abandon()` reports as left behind.
 *
 * A repeated signal never cuts a cleanup short: Ctrl-C in a terminal and systemd's control-group
 * kill signal every process at once, and a child that gets the signal and its parent's word about
 * it must not take the two as "exit now". Containers, mounts and cgroups of a stop cut short
 * would outlive the process.
 *
 * Until `arm()` there is nothing to clean up: a signal exits 1 at once.
 */
export class StopSignals {
  private at = 0;
  /** Signals counted apart from a parent's word: its word and the signal it passes on are one step, not two. */
  private signals = 0;
  private steps: StopSteps | undefined;
  private hurry!: () => void;
  /** Settles at level 2: a drain that races it ends early. */
  readonly hurried = new Promise<void>((resolve) => (this.hurry = resolve));

  constructor(private readonly say: (line: string) => void) {
    const next = () => this.escalate(Math.min(3, ++this.signals) as StopLevel);
    process.on('SIGINT', next);
    process.on('SIGTERM', next);
  }

  /** Whether a stop has begun. */
  get stopping(): boolean {
    return this.at > 0;
  }

  /** From now on a stop runs `steps`. */
  arm(steps: StopSteps): void {
    this.steps = steps;
  }

  /** Takes the stop to `level` (a signal, or a parent's word); a level already reached changes nothing. */
  escalate(level: StopLevel): void {
    if (level <= this.at) return;
    const from = this.at;
    this.at = level;
    const steps = this.steps;
    if (!steps) return void process.exit(1);
    if (from < 1) {
      steps.stop().then(
        () => process.exit(this.at > 1 ? 1 : 0),
        (err: unknown) => {
          this.say(`stopping failed: ${err instanceof Error ? err.message : String(err)}`);
          process.exit(1);
        },
      );
    }
    if (from < 2 && level >= 2) {
      this.say('stopping without waiting for running work; cleaning up (a third signal exits at once)');
      this.hurry();
      steps.hurry?.();
    }
    if (level === 3) {
      void Promise.resolve()
        .then(() => steps.abandon())
        .then(
          (left) => this.say(`exiting at once: ${left}`),
          () => this.say('exiting at once'),
        )
        .finally(() => process.exit(1));
    }
  }
}
