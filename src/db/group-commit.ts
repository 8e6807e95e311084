import type Database from 'better-sqlite3';

interface Pending {
  fn: () => unknown;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/**
 * Group commit: writes queued during one event-loop tick run in one transaction, each inside its
 * own savepoint so that one failing write rolls back alone. With `synchronous = FULL` the whole
 * group costs one WAL fsync instead of one per request (measured in bench/submit.ts).
 */
export class GroupCommit {
  private pending: Pending[] = [];
  private scheduled = false;

  constructor(private readonly sqlite: Database.Database) {}

  run = <T>(fn: () => T): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      this.pending.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });

  flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    const outcomes: Array<{ ok: boolean; value: unknown }> = [];
    const db = this.sqlite;
    try {
      db.exec('BEGIN IMMEDIATE');
      for (const p of batch) {
        db.exec('SAVEPOINT one');
        try {
          outcomes.push({ ok: true, value: p.fn() });
          db.exec('RELEASE one');
        } catch (err) {
          db.exec('ROLLBACK TO one; RELEASE one');
          outcomes.push({ ok: false, value: err });
        }
      }
      db.exec('COMMIT');
    } catch (err) {
      if (db.inTransaction) db.exec('ROLLBACK');
      // The commit itself failed (disk full, I/O error): nothing in the batch is durable.
      for (const p of batch) p.reject(err);
      return;
    }
    batch.forEach((p, i) => {
      const o = outcomes[i]!;
      if (o.ok) p.resolve(o.value);
      else p.reject(o.value);
    });
  }
}
