import { readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import Database from 'better-sqlite3';
import { touchPrivateFile } from './datadir.js';

/** Held until `release()` or the end of the process, however it ends. */
export interface FileLock {
  release(): void;
}

/**
 * Files this process holds a lock on. POSIX record locks belong to the process, not to the
 * descriptor: the kernel never refuses a process a lock it already holds, and closing any
 * descriptor of the file (the touch below, say) drops every lock the process has on it. So a
 * second holder in the same process is refused here, before the file is opened at all.
 */
const held = new Set<string>();

/**
 * Locks `file` (created 0600 if missing) for this process, or answers undefined at once if
 * another process, or another holder in this one, has it.
 *
 * The lock is SQLite's own POSIX record lock, held in exclusive locking mode after one write:
 * the kernel drops it when the process ends, so a `kill -9` leaves no stale lock to clean up, and
 * no native module beyond the database driver is needed. Synchronous, for callers that are.
 *
 * Keep the returned object referenced for as long as the lock must hold: a collected connection
 * closes, and closing frees the lock.
 */
export function tryLockFile(file: string): FileLock | undefined {
  const key = resolve(file);
  if (held.has(key)) return undefined;
  touchPrivateFile(key);
  const db = new Database(key, { timeout: 0 });
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    db.pragma('journal_mode = MEMORY');
    db.exec('BEGIN EXCLUSIVE; COMMIT');
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code === 'SQLITE_BUSY') return undefined;
    throw err;
  }
  held.add(key);
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      db.close();
      held.delete(key);
    },
  };
}

/**
 * The pid holding a POSIX lock on `file`, from /proc/locks (Linux), for messages only: the
 * holder may have let go by the time it is read.
 */
export function lockHolder(file: string): number | undefined {
  try {
    const ino = statSync(file).ino;
    const line = readFileSync('/proc/locks', 'utf8')
      .split('\n')
      .find((l) => l.includes(' POSIX ') && l.split(/\s+/)[5]?.endsWith(`:${ino}`));
    const pid = Number(line?.split(/\s+/)[4]);
    return pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
