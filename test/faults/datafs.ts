import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/** The gateway's database file in its data directory. */
export const DB_FILE = 'corral.db';

/**
 * The gateway's data directory on a small tmpfs of its own, so the harness can fill it to the
 * last byte (the disk-full fault) and free it again without touching the host's disk.
 * Without a size it is a plain directory (the soak measures the real disk's fsyncs).
 */
export class DataFs {
  private mounted = false;
  private readonly filler: string;

  constructor(
    readonly dir: string,
    private readonly bytes?: number,
  ) {
    this.filler = join(dir, 'fault-fill');
  }

  mount(): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    if (this.bytes === undefined) return;
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${this.bytes},mode=0700`, 'corral-faults-data', this.dir]);
    this.mounted = true;
  }

  /** Writes a file until the filesystem has no byte left; returns how many bytes it took. */
  fill(): number {
    const fd = openSync(this.filler, 'w');
    const chunk = Buffer.alloc(1 << 20);
    let n = 0;
    try {
      for (;;) n += writeSync(fd, chunk);
    } catch {
      // ENOSPC: now the last few bytes, so not even a small page is left.
      for (let size = 1 << 19; size >= 1; size >>= 1) {
        try {
          for (;;) n += writeSync(fd, chunk.subarray(0, size));
        } catch {
          /* this size no longer fits */
        }
      }
    } finally {
      closeSync(fd);
    }
    return n;
  }

  free(): void {
    rmSync(this.filler, { force: true });
  }

  /** Size of the database's write-ahead log now. */
  walBytes(): number {
    const wal = join(this.dir, `${DB_FILE}-wal`);
    return existsSync(wal) ? statSync(wal).size : 0;
  }

  unmount(): void {
    this.free();
    if (!this.mounted) return;
    execFileSync('umount', [this.dir]);
    this.mounted = false;
  }
}
