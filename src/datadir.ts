import { chmodSync, closeSync, existsSync, fchmodSync, mkdirSync, openSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from './config.js';

/** Files in the data directory are for the gateway's own user only. */
export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

/**
 * Makes sure `dir` is the gateway's private data directory before anything is written to it:
 * a missing one is created 0700 (then chmod-ed, so the umask cannot widen or narrow it); an
 * existing one that group or others can read, write or traverse is refused with a ConfigError,
 * since the database holds every tenant's jobs and the directory holds the signing secret.
 *
 * Refusing rather than silently tightening: an operator who made it 0755 on purpose (a shared
 * backup user, say) should learn that corral will not run that way, not find it changed.
 */
export function ensurePrivateDataDir(dir: string): void {
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
    chmodSync(dir, PRIVATE_DIR_MODE);
    return;
  }
  const st = statSync(dir);
  if (!st.isDirectory()) throw new ConfigError(`data directory ${dir} is not a directory`);
  const mode = st.mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new ConfigError(
      `data directory ${dir} is open to group or others (mode ${mode.toString(8).padStart(4, '0')}); ` +
        `it holds the database and signing secret: run \`chmod 700 ${dir}\` and start again`,
    );
  }
}

/**
 * Creates `file` with mode 0600 whatever the umask and writes `data`; fails if it exists
 * (`flag: 'wx'`), so a file planted beforehand is never written through.
 */
export function writePrivateFile(file: string, data: string): void {
  const fd = openSync(file, 'wx', PRIVATE_FILE_MODE);
  try {
    fchmodSync(fd, PRIVATE_FILE_MODE);
    writeSync(fd, data);
  } finally {
    closeSync(fd);
  }
}

/** Creates `file` empty with mode 0600 if missing, and sets 0600 on it either way. */
export function touchPrivateFile(file: string): void {
  const fd = openSync(file, 'a', PRIVATE_FILE_MODE);
  try {
    fchmodSync(fd, PRIVATE_FILE_MODE);
  } finally {
    closeSync(fd);
  }
}

/** The data directory's lock: a one-page SQLite database that only its holder can read or write. */
export const LOCK_FILE = 'gateway.lock';

/** Held while the process lives; `release()` (or the process's exit, however it ends) frees it. */
export interface DataDirLock {
  release(): void;
}

/**
 * Makes this process the only gateway on `dir`, or throws a ConfigError naming the one that is.
 *
 * The lock is on `gateway.lock` (see tryLockFile: a POSIX lock the kernel drops with the
 * process, so a `kill -9` leaves nothing stale). Only this file is locked: `corral backup` still
 * reads `corral.db` while the gateway serves.
 *
 * Keep the returned object referenced for as long as the lock must hold.
 */
export async function lockDataDir(dir: string): Promise<DataDirLock> {
  const file = join(dir, LOCK_FILE);
  // Loaded here, not at the top: client commands (corral token) import this module too, and the
  // lock module loads the database driver.
  const { lockHolder, tryLockFile } = await import('./filelock.js');
  const lock = tryLockFile(file);
  if (lock) return lock;
  const pid = lockHolder(file);
  throw new ConfigError(
    `data directory ${dir} is in use by another corral gateway${pid ? ` (pid ${pid})` : ''}: ` +
      'stop it first, or give this one a --data of its own',
  );
}
