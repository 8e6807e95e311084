import type Database from 'better-sqlite3';
import { StorageFull } from '../errors/domain.js';
import { WalSync, type SyncFn } from './wal-sync.js';

interface Pending {
  fn: () => unknown;
  durable: boolean;
  committed?: (() => void) | undefined;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

export interface GroupCommitOptions {
  /**
   * `true` (the default): writes queued during one event-loop turn share one transaction; the
   * WAL is fsynced off the event loop and durable writes resolve once that fsync is done.
   * `false`: every write is its own transaction, fsynced by SQLite inside COMMIT (the baseline
   * bench/submit.ts compares).
   */
  grouped?: boolean;
  /** Whether writes are fsynced at all (`sync: 'normal'` turns this off). */
  durable?: boolean;
  /** The database file, whose `-wal` is fsynced; none for ":memory:". */
  file?: string;
  /** Replaces fs.fdatasync (tests use it to hold a sync open or make it fail). */
  fdatasync?: SyncFn;
  /** Called once when an fsync of the WAL fails; every durable write waiting on it is rejected. */
  onSyncError?: (err: unknown) => void;
}

/** Whether a write failed because the data disk is full (SQLite's or the kernel's word for it). */
export function isDiskFull(err: unknown): boolean {
  if (err instanceof StorageFull) return true;
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'SQLITE_FULL' || code === 'ENOSPC';
}

/**
 * Group commit: writes queued during one event-loop tick run in one transaction, each inside its
 * own savepoint so that one failing write rolls back alone. SQLite commits the group without an
 * fsync (WAL, synchronous = NORMAL) and the WAL is then fsynced on libuv's thread pool, so the
 * event loop keeps serving while the disk works. Measured in bench/submit.ts and bench/invoke.ts:
 * an fsync inside COMMIT held the gateway's only thread for ~30 % of its time under load.
 */
export class GroupCommit {
  private pending: Pending[] = [];
  private scheduled = false;
  private refusedFull = 0;
  private readonly stmt;
  private readonly grouped: boolean;
  readonly wal: WalSync;

  constructor(
    private readonly sqlite: Database.Database,
    o: GroupCommitOptions = {},
  ) {
    // Prepared once: exec() would compile these statements again for every write.
    const p = (q: string) => sqlite.prepare(q);
    this.stmt = { begin: p('BEGIN IMMEDIATE'), commit: p('COMMIT'), save: p('SAVEPOINT one'), release: p('RELEASE one'), undo: p('ROLLBACK TO one') };
    this.grouped = o.grouped ?? true;
    const durable = o.durable ?? true;
    // Grouped: SQLite never fsyncs at commit, WalSync does. Ungrouped: SQLite fsyncs in COMMIT.
    sqlite.pragma(`synchronous = ${durable && !this.grouped ? 'FULL' : 'NORMAL'}`);
    const writes = sqlite.prepare('SELECT total_changes()').pluck();
    this.wal = new WalSync(this.grouped && durable && o.file && o.file !== ':memory:' ? `${o.file}-wal` : undefined, {
      ...(o.fdatasync && { sync: o.fdatasync }),
      ...(o.onSyncError && { onFatal: o.onSyncError }),
      // Inside a transaction its writes are not counted yet: such a barrier always syncs.
      writes: () => (sqlite.inTransaction ? Infinity : (writes.get() as number)),
    });
  }

  /**
   * Runs `fn` in the next group and resolves with its result once it is on disk. `durable: false`
   * marks a write that may be lost in a power cut without harm (an attempt's start time, output
   * chunks): it resolves at commit, and the next fsync makes it durable along with the rest.
   * `committed` is called as soon as the write is committed (visible to readers), before its
   * fsync: work that need not wait for the disk starts there.
   */
  run = <T>(fn: () => T, o: { durable?: boolean; committed?: () => void } = {}): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (!this.grouped) {
        try {
          const value = this.sqlite.transaction(fn)();
          o.committed?.();
          return resolve(value);
        } catch (err) {
          return reject(this.asStorageError(err));
        }
      }
      this.pending.push({ fn, durable: o.durable ?? true, committed: o.committed, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });

  /**
   * Resolves once everything committed so far (and the transaction in progress, if called from
   * inside one, and the writes queued for the next group) is on disk. Whoever tells the outside
   * world about a state change waits for this. Nothing written since the last fsync began: it
   * resolves at once, so reading an old finished job costs no fsync.
   */
  /** Writes refused so far because the disk was full (the lease reaper looks at this). */
  get diskFullRefusals(): number {
    return this.refusedFull;
  }

  /**
   * A commit that failed because the disk is full becomes StorageFull (answered 507): nothing of
   * its group was written, and the same request succeeds once space returns. It is counted.
   */
  private asStorageError(err: unknown): unknown {
    if (!isDiskFull(err)) return err;
    this.refusedFull++;
    return err instanceof StorageFull ? err : new StorageFull('the data disk is full: nothing was written; retry once space is freed', { cause: err });
  }

  durable = (): Promise<void> =>
    this.pending.length > 0
      ? // After the queued group: a group that fails (a full disk) wrote nothing to wait for, and a
        // read waiting here must not fail with it.
        this.run(() => undefined, { durable: false }).then(
          () => this.wal.barrier(),
          () => this.wal.barrier(),
        )
      : this.wal.barrier();

  flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    const outcomes: Array<{ ok: boolean; value: unknown }> = [];
    const st = this.stmt;
    try {
      st.begin.run();
      for (const p of batch) {
        st.save.run();
        try {
          outcomes.push({ ok: true, value: p.fn() });
          st.release.run();
        } catch (err) {
          st.undo.run();
          st.release.run();
          outcomes.push({ ok: false, value: this.asStorageError(err) });
        }
      }
      st.commit.run();
    } catch (err) {
      if (this.sqlite.inTransaction) this.sqlite.exec('ROLLBACK');
      // The commit itself failed (disk full, I/O error): nothing in the batch was written.
      for (const p of batch) p.reject(this.asStorageError(err));
      return;
    }
    let synced: Promise<void> | undefined;
    batch.forEach((p, i) => {
      const o = outcomes[i]!;
      if (!o.ok) return p.reject(o.value);
      // A throwing hook fails its own write's promise, never the rest of the group.
      try {
        p.committed?.();
      } catch (err) {
        return p.reject(err);
      }
      if (!p.durable) return p.resolve(o.value);
      synced ??= this.wal.barrier();
      synced.then(() => p.resolve(o.value), p.reject);
    });
  }

  /** Commits what is pending and waits for it to reach the disk. */
  async close(): Promise<void> {
    this.flush();
    await this.wal.barrier();
    this.wal.close();
  }
}

/**
 * Runs `fn` in one transaction. Grouped commits never fsync inside SQLite, so this commit costs no
 * fsync either; the next durable commit's fsync covers it. For writes whose loss in a power cut is
 * harmless by design, such as claims (see JobMachine.claim).
 */
export function lazyTransaction<T>(sqlite: Database.Database, fn: () => T): T {
  return sqlite.transaction(fn).immediate();
}
