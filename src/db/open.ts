import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, touchPrivateFile } from '../datadir.js';
import { packageRoot } from '../paths.js';
import * as schema from './schema/index.js';
import { GroupCommit } from './group-commit.js';

export type Db = BetterSQLite3Database<typeof schema>;

export interface Store {
  sqlite: Database.Database;
  db: Db;
  /** Runs `fn` inside the next grouped commit; resolves once it is on disk (see GroupCommit.run). */
  commit: GroupCommit['run'];
  /** Resolves once everything committed so far is on disk (see GroupCommit.durable). */
  durable: GroupCommit['durable'];
  close(): Promise<void>;
}

/**
 * Opens (creating if needed) the SQLite database, applies committed migrations and sets WAL.
 * `sync: 'full'` makes every durable commit wait for an fsync of the WAL, so a 202 means the job
 * is on disk; commits from one event-loop tick are grouped into one transaction, and the fsync
 * runs off the event loop (see GroupCommit). `sync: 'normal'` skips the fsync (not power-safe).
 */
export function openStore(file: string, sync: 'full' | 'normal' = 'full', groupCommit = true): Store {
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
  sqlite.pragma('cache_size = -65536');
  sqlite.pragma('temp_store = memory');
  const db = drizzle(sqlite, { schema });
  migrate(db, { migrationsFolder: join(packageRoot(), 'migrations') });
  const group = new GroupCommit(sqlite, { grouped: groupCommit, durable: sync === 'full', file });
  return {
    sqlite,
    db,
    commit: group.run,
    durable: group.durable,
    close: async () => {
      await group.close();
      sqlite.close();
    },
  };
}
