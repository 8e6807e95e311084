import type Database from 'better-sqlite3';
import { statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

export interface CheckpointOptions {
  /** How often the worker looks at the WAL. */
  intervalMs?: number;
  /**
   * How much WAL may wait for a checkpoint. Each catch-up lets the gateway's next write start the
   * WAL over, and SQLite fsyncs the new WAL header there, on the event loop: below this size
   * that fsync would cost more than the checkpoint saves. About SQLite's own default (1000 pages).
   */
  minWalBytes?: number;
  /**
   * Past this size the serving connection runs one passive checkpoint itself, between two of its
   * transactions: it copies the little the worker's passes left, and its next write starts the
   * WAL over (journal_size_limit then shrinks the file).
   */
  maxWalBytes?: number;
  /** Called once when a checkpoint's fsync fails (see WalSync's onFatal: never retried). */
  onFatal: (err: Error) => void;
}

export const CHECKPOINT_INTERVAL_MS = 500;
/** How often the serving side looks at the WAL's size (one stat): the bound overshoots by what is written in between. */
const BOUND_CHECK_MS = 100;
export const MIN_WAL_BYTES = 4 * 1024 * 1024;
export const MAX_WAL_BYTES = 16 * 1024 * 1024;
/** What a WAL that started over is cut back to; below MAX_WAL_BYTES, since the serving side's check reads the file's size. */
export const WAL_SIZE_LIMIT = 4 * 1024 * 1024;

/**
 * The worker's code, run from a string: the same text works from the sources under vitest and
 * from dist/, with no second entry point to build. It has a connection of its own.
 *
 * A PASSIVE checkpoint copies WAL frames into the database without taking the writer's lock, so
 * the gateway commits meanwhile and none of its transactions can be refused for it (a RESTART or
 * TRUNCATE checkpoint here takes that lock, and a deferred transaction that meets it fails with
 * SQLITE_BUSY at once). Frames committed during a pass are left for the next one; a few passes
 * in a row usually catch up, and the gateway's next write then starts the WAL over from its
 * beginning. Under writes that never pause, the passes never quite catch up: see maxWalBytes.
 */
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { closeSync, openSync, readSync } = require('node:fs');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { fileMustExist: true });
db.pragma('busy_timeout = 1000');
const shm = Buffer.alloc(100);
// Bytes of WAL not yet checkpointed, from the wal-index header in the -shm file (sqlite.org/walformat.html:
// mxFrame at byte 16, the page size at 14, nBackfill at 96, native byte order). Read without its locks:
// a guess is enough to decide whether to start.
// The descriptor stays open for the worker's life: closing any descriptor of a file drops every
// POSIX lock this process holds on it, SQLite's own included, and the next process to open the
// database would then take the -shm file for unused and truncate it under the gateway's mapping
// (SIGBUS).
let shmFd;
function behind() {
  if (shmFd === undefined) { try { shmFd = openSync(workerData.file + '-shm', 'r'); } catch { return 0; } }
  if (readSync(shmFd, shm, 0, 100, 0) < 100) return 0;
  const frames = shm.readUInt32LE(16) - shm.readUInt32LE(96);
  const page = shm.readUInt16LE(14) === 1 ? 65536 : shm.readUInt16LE(14);
  return frames * (page + 24);
}
function pass() {
  if (behind() < workerData.minWalBytes) return;
  // Each pass copies what the gateway committed during the one before; stop once one finds nothing new.
  let seen = -1;
  for (let i = 0; i < 8; i++) {
    const r = db.pragma('wal_checkpoint(PASSIVE)')[0];
    if (r.busy || r.log === seen) break;
    seen = r.log;
  }
}
const timer = setInterval(() => {
  try { pass(); } catch (err) {
    // A failed fsync is final (the caller exits); anything else (a full disk, a busy lock) changed
    // nothing and the next tick tries again.
    if (/FSYNC/.test(String(err.code))) { clearInterval(timer); parentPort.postMessage({ fatal: String(err.code) + ': ' + err.message }); }
  }
}, workerData.intervalMs);
parentPort.on('message', () => { clearInterval(timer); db.close(); if (shmFd !== undefined) closeSync(shmFd); parentPort.close(); });
`;

/**
 * Checkpoints the WAL of `file` on a worker thread. SQLite's own automatic checkpoint runs inside
 * the COMMIT that crosses 1000 pages, on the gateway's only thread, and fsyncs the WAL and the
 * database there; the serving connection turns it off (`wal_autocheckpoint = 0`) and this takes
 * over. Measured in bench/queue.ts (event-loop delay under durable writes).
 */
export class Checkpointer {
  private readonly worker: Worker;
  private readonly exited: Promise<void>;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly sqlite: Database.Database,
    file: string,
    o: CheckpointOptions,
  ) {
    const intervalMs = o.intervalMs ?? CHECKPOINT_INTERVAL_MS;
    const maxWalBytes = o.maxWalBytes ?? MAX_WAL_BYTES;
    const driver = createRequire(import.meta.url).resolve('better-sqlite3');
    this.worker = new Worker(WORKER, {
      eval: true,
      // Not the parent's flags: under `--input-type=module` the evaluated source would be an ES
      // module, where `require` does not exist.
      execArgv: [],
      workerData: { file, driver, intervalMs, minWalBytes: o.minWalBytes ?? MIN_WAL_BYTES },
    });
    this.worker.on('message', (m: { fatal: string }) => o.onFatal(new Error(`WAL checkpoint failed: ${m.fatal}`)));
    // A worker that cannot run leaves the WAL to grow without bound: as fatal as a failed fsync.
    this.worker.on('error', (err) => o.onFatal(err));
    this.exited = new Promise((resolve) => this.worker.once('exit', () => resolve()));
    // A store nobody closes must not keep the process alive.
    this.worker.unref();
    this.timer = setInterval(() => this.bound(`${file}-wal`, maxWalBytes, o.onFatal), BOUND_CHECK_MS);
    this.timer.unref();
  }

  /** The serving connection's catch-up when the worker's passes fell behind (see maxWalBytes). */
  private bound(wal: string, maxWalBytes: number, onFatal: (err: Error) => void): void {
    let size: number;
    try {
      size = statSync(wal).size;
    } catch {
      return; // no WAL yet
    }
    if (size <= maxWalBytes) return;
    try {
      this.sqlite.pragma('wal_checkpoint(PASSIVE)');
    } catch (err) {
      // As in the worker: only a failed fsync is final; a full disk or a busy lock waits for the next tick.
      if (/FSYNC/.test(String((err as { code?: unknown }).code))) onFatal(err as Error);
    }
  }

  /** Stops the worker and closes its connection; resolves once it has exited. */
  async stop(): Promise<void> {
    // Held by this wait: an unreferenced worker would let the process end before it closes.
    clearInterval(this.timer);
    this.worker.ref();
    this.worker.postMessage('stop');
    await this.exited;
  }
}
