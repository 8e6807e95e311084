import type Database from 'better-sqlite3';

interface Pending {
  fn: () => unknown;
  durable: boolean;
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
  private readonly stmt;

  constructor(
    private readonly sqlite: Database.Database,
    /** false: every write is its own transaction and fsync (the baseline bench/submit.ts compares). */
    private readonly grouped = true,
  ) {
    // Prepared once: exec() would compile these statements again for every write. PRAGMAs are
    // not prepared: SQLite runs some of them while compiling, so preparing one would apply it.
    const p = (q: string) => sqlite.prepare(q);
    const level = sqlite.pragma('synchronous', { simple: true }) === 2 ? 'FULL' : 'NORMAL';
    this.stmt = {
      begin: p('BEGIN IMMEDIATE'),
      commit: p('COMMIT'),
      save: p('SAVEPOINT one'),
      release: p('RELEASE one'),
      undo: p('ROLLBACK TO one'),
      lazy: { run: () => sqlite.pragma('synchronous = NORMAL') },
      strict: { run: () => sqlite.pragma(`synchronous = ${level}`) },
    };
  }

  /**
   * Runs `fn` in the next group. `durable: false` marks a write that may be lost in a power cut
   * without harm (an attempt's start time, output chunks): a group of only such writes commits
   * without an fsync, and the next durable commit syncs them along with itself.
   */
  run = <T>(fn: () => T, o: { durable?: boolean } = {}): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (!this.grouped) {
        try {
          return resolve(this.sqlite.transaction(fn)());
        } catch (err) {
          return reject(err);
        }
      }
      this.pending.push({ fn, durable: o.durable ?? true, resolve: resolve as (v: unknown) => void, reject });
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
      const st = this.stmt;
      const lazy = !batch.some((p) => p.durable);
      if (lazy) st.lazy.run();
      st.begin.run();
      for (const p of batch) {
        st.save.run();
        try {
          outcomes.push({ ok: true, value: p.fn() });
          st.release.run();
        } catch (err) {
          st.undo.run();
          st.release.run();
          outcomes.push({ ok: false, value: err });
        }
      }
      st.commit.run();
      if (lazy) st.strict.run();
    } catch (err) {
      if (db.inTransaction) db.exec('ROLLBACK');
      this.stmt.strict.run();
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

/**
 * Runs `fn` in one transaction committed without an fsync (synchronous = NORMAL for this commit
 * only); the next durable commit makes it durable too. For writes whose loss in a power cut is
 * harmless by design, such as claims (see JobMachine.claim).
 */
export function lazyTransaction<T>(sqlite: Database.Database, fn: () => T): T {
  const level = sqlite.pragma('synchronous', { simple: true });
  sqlite.pragma('synchronous = NORMAL');
  try {
    return sqlite.transaction(fn).immediate();
  } finally {
    sqlite.pragma(`synchronous = ${level}`);
  }
}
