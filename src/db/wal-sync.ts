import { closeSync, fdatasync, fstatSync, fsyncSync, openSync } from 'node:fs';
import { dirname } from 'node:path';

export type SyncFn = (fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => void;

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * Makes SQLite's write-ahead log durable off the event loop: `barrier()` resolves after an
 * fdatasync of the WAL that started after the caller's writes were committed. One sync runs at a
 * time; barriers that arrive while it runs share the next one, so a burst costs two syncs at most.
 *
 * Why this is safe: SQLite (WAL, synchronous = NORMAL) has written every committed frame to the
 * WAL with write(2) by the time COMMIT returns; an fdatasync of the file afterwards puts them on
 * disk. A checkpoint fsyncs the WAL itself before it copies frames into the database, so frames
 * it moves are durable too. A sync starts only from a fresh microtask, when no transaction is open
 * (better-sqlite3 transactions are synchronous), so it never races the COMMIT it must cover.
 */
export class WalSync {
  private fd: number | undefined;
  private waiting: Waiter[] = [];
  private running = false;
  private queued = false;

  constructor(
    /** The `-wal` file; undefined when nothing is to be synced (":memory:" or sync off). */
    private readonly path: string | undefined,
    private readonly sync: SyncFn = fdatasync,
  ) {}

  barrier(): Promise<void> {
    if (this.path === undefined) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.running && !this.queued) {
        this.queued = true;
        queueMicrotask(() => {
          this.queued = false;
          this.start();
        });
      }
    });
  }

  private start(): void {
    if (this.running || this.waiting.length === 0) return;
    const batch = this.waiting;
    this.waiting = [];
    const settle = (err: unknown) => {
      this.running = false;
      for (const w of batch) if (err) w.reject(err);
      else w.resolve();
      this.start(); // barriers that arrived meanwhile
    };
    try {
      if (this.fd !== undefined && fstatSync(this.fd).nlink === 0) this.close(); // replaced under us
      this.fd ??= this.open(this.path!);
    } catch (err) {
      // No WAL file: nothing was ever committed through one, so nothing waits on it.
      return settle((err as NodeJS.ErrnoException).code === 'ENOENT' ? null : err);
    }
    this.running = true;
    this.sync(this.fd, settle);
  }

  /**
   * Opens the WAL and, once, fsyncs its directory: SQLite syncs a new WAL's directory entry only
   * at its first checkpoint, and a file whose entry is lost takes its frames with it.
   */
  private open(path: string): number {
    const fd = openSync(path, 'r');
    const dir = openSync(dirname(path), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    return fd;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
