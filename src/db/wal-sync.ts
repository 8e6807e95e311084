import { closeSync, fdatasync, fstatSync, fsyncSync, openSync } from 'node:fs';
import { dirname } from 'node:path';

export type SyncFn = (fd: number, cb: (err: NodeJS.ErrnoException | null) => void) => void;

interface Waiter {
  resolve: () => void;
  reject: (err: unknown) => void;
}

export interface WalSyncOptions {
  /** Replaces fs.fdatasync (tests use it to hold a sync open or make it fail). */
  sync?: SyncFn;
  /**
   * How many writes the connection has made so far (SQLite's total_changes()), or Infinity
   * inside an open transaction. A barrier with nothing new since the last sync began is already
   * met, so reading an old finished job costs no fsync. Without it every barrier syncs.
   */
  writes?: () => number;
  /**
   * Called once when an fsync fails. The failure is final: a retried fsync can report success
   * after the kernel dropped the pages it could not write (Linux clears the error once it has
   * reported it), so nothing written since the last good sync may ever be called durable.
   */
  onFatal?: (err: unknown) => void;
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
  /** The write count when the last successful sync began: everything up to it is on disk. */
  private synced = -1;
  /** The write count when the running sync began. */
  private covering = -1;
  private runningBatch: Waiter[] = [];
  private failed: { err: unknown } | undefined;
  private readonly sync: SyncFn;

  constructor(
    /** The `-wal` file; undefined when nothing is to be synced (":memory:" or sync off). */
    private readonly path: string | undefined,
    private readonly o: WalSyncOptions = {},
  ) {
    this.sync = o.sync ?? fdatasync;
  }

  barrier(): Promise<void> {
    if (this.path === undefined) return Promise.resolve();
    if (this.failed) return Promise.reject(this.failed.err);
    const writes = this.o.writes?.() ?? Infinity;
    if (writes <= this.synced) return Promise.resolve();
    return new Promise((resolve, reject) => {
      // The sync under way began after these writes: it covers them.
      if (this.running && writes <= this.covering) return this.runningBatch.push({ resolve, reject });
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
    if (this.failed) return batch.forEach((w) => w.reject(this.failed!.err));
    const covering = this.o.writes?.() ?? Infinity;
    const settle = (err: unknown) => {
      this.running = false;
      this.runningBatch = [];
      if (err) {
        this.failed ??= { err };
        this.o.onFatal?.(err);
      } else if (covering !== Infinity) this.synced = Math.max(this.synced, covering);
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
    this.covering = covering;
    this.runningBatch = batch;
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
