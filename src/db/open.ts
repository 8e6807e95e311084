import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, touchPrivateFile } from '../datadir.js';
import { packageRoot } from '../paths.js';
import * as schema from './schema/index.js';
import { GroupCommit } from './group-commit.js';
import type { SyncFn } from './wal-sync.js';
import { Checkpointer, WAL_SIZE_LIMIT } from './checkpoint.js';

export type Db = BetterSQLite3Database<typeof schema>;

export interface Store {
  sqlite: Database.Database;
  db: Db;
  /** Runs `fn` inside the next grouped commit; resolves once it is on disk (see GroupCommit.run). */
  commit: GroupCommit['run'];
  /** Resolves once everything committed so far is on disk (see GroupCommit.durable). */
  durable: GroupCommit['durable'];
  /** Writes refused so far because the disk was full (see GroupCommit.diskFullRefusals). */
  diskFullRefusals: () => number;
  close(): Promise<void>;
}

export interface StoreOptions {
  /**
   * Called when an fsync of the WAL or a checkpoint fails. The default logs to stderr and exits
   * the process with status 70: a supervisor restarts it and SQLite recovers from the WAL what was
   * committed, instead of this process going on with writes the disk may have dropped.
   */
  onSyncError?: (err: unknown) => void;
  /**
   * `worker` (the default): the WAL is checkpointed on a worker thread (see Checkpointer).
   * `inline`: SQLite's own automatic checkpoint inside COMMIT, on this thread (the baseline
   * bench/queue.ts compares).
   */
  checkpoint?: 'worker' | 'inline';
  /** Replaces fs.fdatasync for the WAL (bench/queue.ts counts the real ones; tests make one fail). */
  fdatasync?: SyncFn;
  /** SQLite's page cache in MiB (16 by default; see GatewayConfig.dbCacheMib). */
  cacheMib?: number;
}

/** Exit status after a failed fsync (EX_SOFTWARE). */
export const SYNC_FAILED_EXIT = 70;

function exitOnSyncError(file: string) {
  return (err: unknown) => {
    process.stderr.write(`corral: fsync of ${file}'s write-ahead log failed (${err instanceof Error ? err.message : String(err)}); exiting: start again to recover what was committed\n`);
    process.exit(SYNC_FAILED_EXIT);
  };
}

/**
 * Opens (creating if needed) the SQLite database, applies committed migrations and sets WAL.
 * `sync: 'full'` makes every durable commit wait for an fsync of the WAL, so a 202 means the job
 * is on disk; commits from one event-loop tick are grouped into one transaction, and the fsync
 * runs off the event loop (see GroupCommit). `sync: 'normal'` skips the fsync (not power-safe).
 */
export function openStore(file: string, sync: 'full' | 'normal' = 'full', groupCommit = true, o: StoreOptions = {}): Store {
  if (file !== ':memory:') {
    mkdirSync(dirname(file), { recursive: true, mode: PRIVATE_DIR_MODE });
    // Created 0600 before SQLite opens it: SQLite would create it 0644 under the usual umask,
    // and it gives the -wal and -shm files the database file's mode.
    touchPrivateFile(file);
  }
  const sqlite = new Database(file);
  sqlite.pragma('journal_mode = WAL');
  if (file !== ':memory:') {
    // Left over from a version that did not set modes: tighten them too.
    for (const f of [`${file}-wal`, `${file}-shm`]) if (existsSync(f)) chmodSync(f, PRIVATE_FILE_MODE);
  }
  sqlite.pragma('foreign_keys = ON');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma(`cache_size = -${(o.cacheMib ?? 16) * 1024}`);
  sqlite.pragma('temp_store = memory');
  const db = drizzle(sqlite, { schema });
  migrate(db, { migrationsFolder: join(packageRoot(), 'migrations') });
  const onSyncError = o.onSyncError ?? exitOnSyncError(file);
  const group = new GroupCommit(sqlite, { grouped: groupCommit, durable: sync === 'full', file, onSyncError, ...(o.fdatasync && { fdatasync: o.fdatasync }) });
  let checkpointer: Checkpointer | undefined;
  if (file !== ':memory:' && (o.checkpoint ?? 'worker') === 'worker') {
    sqlite.pragma('wal_autocheckpoint = 0');
    // The WAL starts over once a checkpoint has caught up; a file grown by a burst shrinks back then.
    sqlite.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT}`);
    checkpointer = new Checkpointer(sqlite, file, { onFatal: onSyncError });
  }
  let closing: Promise<void> | undefined;
  return {
    sqlite,
    db,
    commit: group.run,
    durable: group.durable,
    diskFullRefusals: () => group.diskFullRefusals,
    // Closing twice (a test's cleanup after a gateway's own stop) waits for the first close.
    close: () =>
      (closing ??= (async () => {
        await group.close();
        // Before the last connection closes: that close checkpoints the rest and removes the WAL.
        await checkpointer?.stop();
        sqlite.close();
      })()),
  };
}
