import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/paths.js';

export const CLI = join(packageRoot(), 'dist', 'src', 'cli', 'main.js');

/** Something the harness saw happen to a process: the fault report and the checker read these. */
export interface ProcEvent {
  at: number;
  proc: string;
  what: 'started' | 'exited' | 'restarted';
  detail?: string;
}

/**
 * A gateway or agent process the harness owns: started from the compiled CLI, its output
 * appended to a log file, killed and stopped by pid. An exit the harness did not cause is
 * recorded and the process is started again a second later (a supervisor such as systemd's
 * Restart= would); the checker reports every such exit.
 */
export class Proc {
  child?: ChildProcess;
  private readonly log: WriteStream;
  /** Set while the harness itself ends the process, so its exit is not taken for a crash. */
  private expected = false;
  private closed = false;
  private restartTimer?: NodeJS.Timeout;

  constructor(
    readonly name: string,
    private readonly argv: () => string[],
    logFile: string,
    private readonly events: ProcEvent[],
  ) {
    this.log = createWriteStream(logFile, { flags: 'a' });
  }

  get pid(): number | undefined {
    return this.child?.exitCode === null && this.child.signalCode === null ? this.child.pid : undefined;
  }

  start(): void {
    const [cmd, ...args] = this.argv();
    const child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CORRAL_LOG_LEVEL: 'info' } });
    this.child = child;
    this.expected = false;
    child.stdout!.pipe(this.log, { end: false });
    child.stderr!.pipe(this.log, { end: false });
    this.events.push({ at: Date.now(), proc: this.name, what: 'started', detail: `pid ${child.pid}` });
    child.once('exit', (code, signal) => {
      this.events.push({ at: Date.now(), proc: this.name, what: 'exited', detail: `${signal ?? `code ${code}`}${this.expected ? '' : ' (not caused by the harness)'}` });
      if (this.expected || this.closed) return;
      this.restartTimer = setTimeout(() => {
        if (this.closed || this.pid) return;
        this.events.push({ at: Date.now(), proc: this.name, what: 'restarted', detail: 'after an exit the harness did not cause' });
        this.start();
      }, 1000);
    });
  }

  /** `kill -9`; resolves when the process is gone. It stays down until `start()`. */
  kill9(): Promise<void> {
    return this.signal('SIGKILL');
  }

  /** Sends `sig` and waits for the exit (SIGTERM: the process drains first). */
  signal(sig: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || !this.pid) return Promise.resolve();
    this.expected = true;
    return new Promise((resolve) => {
      child.once('exit', () => resolve());
      child.kill(sig);
    });
  }

  pause(): void {
    if (this.pid) process.kill(this.pid, 'SIGSTOP');
  }

  resume(): void {
    if (this.pid) process.kill(this.pid, 'SIGCONT');
  }

  /** Stops for good: SIGTERM (drain), SIGKILL after `graceMs`. */
  async stop(graceMs: number): Promise<void> {
    this.closed = true;
    clearTimeout(this.restartTimer);
    const child = this.child;
    if (child && this.pid) {
      this.resume();
      const killer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await this.signal('SIGTERM');
      clearTimeout(killer);
    }
    if (!this.log.writableEnded) await new Promise<void>((r) => this.log.end(() => r()));
  }
}

/** Polls `check` every `stepMs` until it holds; throws after `ms`. */
export async function until(check: () => boolean | Promise<boolean>, ms: number, what: string, stepMs = 100): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
