import { chmodSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tryLockFile, type FileLock } from '../../src/filelock.js';

/** Ids in one container's user namespace: container ids 0..65535 map onto one such range. */
export const RANGE_SIZE = 65536;

/** root's subordinate id ranges from an /etc/subuid or /etc/subgid text: [start, count][]. */
export function parseSubids(text: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const line of text.split('\n')) {
    const [who, start, count] = line.trim().split(':');
    if ((who === 'root' || who === '0') && /^\d+$/.test(start ?? '') && /^\d+$/.test(count ?? '')) out.push([Number(start), Number(count)]);
  }
  return out;
}

/** Whole ranges of RANGE_SIZE ids that both the uid and the gid ranges grant. */
export function slotsOf(uids: Array<[number, number]>, gids: Array<[number, number]>): number[] {
  const granted = (list: Array<[number, number]>, base: number) => list.some(([s, c]) => base >= s && base + RANGE_SIZE <= s + c);
  const bases = new Set<number>();
  for (const [start, count] of uids) for (let b = start; b + RANGE_SIZE <= start + count; b += RANGE_SIZE) if (granted(gids, b)) bases.add(b);
  return [...bases].sort((a, b) => a - b);
}

/**
 * This process's claims on host id ranges, seen by every agent on the host (and by the bench):
 * one lock file per range base in one host-wide directory. A claim is a POSIX lock (see
 * tryLockFile), so it ends with its holder however that ends — a `kill -9` frees its ranges at
 * once, and nothing stale is left to clean up. A range is claimed by at most one holder at a time,
 * whether the other holder is another process or another allocator in this one.
 */
export class RangeClaims {
  private readonly held = new Map<number, FileLock>();

  /**
   * `dir` is created 0700 if missing. One that others may write is refused: whoever can replace a
   * lock file there can give two agents the same range.
   */
  constructor(private readonly dir: string) {
    if (!existsSync(dir)) {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      chmodSync(dir, 0o700);
    }
    const mode = statSync(dir).mode & 0o777;
    if ((mode & 0o022) !== 0) throw new Error(`id range lock directory ${dir} is writable by group or others (mode ${mode.toString(8).padStart(4, '0')}): run \`chmod 700 ${dir}\``);
  }

  /** Claims the range at `base`; false if someone else holds it. Claiming a range this holder has is a no-op. */
  claim(base: number): boolean {
    if (this.held.has(base)) return true;
    const lock = tryLockFile(join(this.dir, `${base}.lock`));
    if (lock) this.held.set(base, lock);
    return lock !== undefined;
  }

  /** The bases this holder claims. */
  bases(): number[] {
    return [...this.held.keys()];
  }

  release(base: number): void {
    this.held.get(base)?.release();
    this.held.delete(base);
  }

  /** Gives up every claim. */
  close(): void {
    for (const base of this.bases()) this.release(base);
  }
}

/** How long a range another holder had is tried after the others. */
const REFUSED_RETRY_MS = 10_000;

interface Record {
  /** tenant → first host id of its range. */
  tenants: { [tenant: string]: number };
  /** tenant → when a container of it last started (ms), for eviction. */
  used: { [tenant: string]: number };
}

export interface IdmapOptions {
  /** Where the assignment is recorded (survives agent restarts). */
  file: string;
  /** Ranges root may map (from /etc/subuid and /etc/subgid). */
  slots: number[];
  /** The images' range: owns image files, never given to a tenant. */
  imageBase: number;
  /** Whether a range still has live containers (such a range is never taken from its tenant). */
  inUse: (base: number) => boolean;
  /** The host-wide directory where agents claim ranges (RangeClaims): the agent's idLockDir. */
  lockDir: string;
  clock?: () => number;
}

/**
 * Host id ranges per tenant: each tenant's containers map their ids onto the tenant's own range,
 * so a process that broke out of one tenant's container owns nothing of another tenant's — not
 * its processes, not its files. Ranges come from root's entries in /etc/subuid and /etc/subgid,
 * are recorded in a file so a tenant keeps its range across restarts, and are reused for that
 * tenant. Blank containers start in a range no tenant holds yet; the first tenant to take one
 * adopts its range. When every range is taken, the least recently used tenant with no live
 * container gives its range up.
 *
 * Other agents may share the host and its ranges, so every range this allocator assigns (to a
 * tenant, or as a spare) is claimed host-wide first (RangeClaims) and stays claimed while it is
 * assigned or still has containers here; a range another agent claims is skipped.
 */
export class IdmapAllocator {
  private readonly rec: Record;
  private readonly clock: () => number;
  /** Ranges of blank containers, not yet any tenant's. */
  private readonly spares = new Set<number>();
  private readonly claims: RangeClaims;
  /** Ranges another holder had when last tried: base → when (ms). */
  private readonly refused = new Map<number, number>();

  constructor(private readonly o: IdmapOptions) {
    this.clock = o.clock ?? Date.now;
    this.claims = new RangeClaims(o.lockDir);
    this.rec = load(o.file);
    // A range the host no longer grants (subuid edited) is forgotten, and so is one another agent
    // claimed while this one was down: no container of the previous run is left in it (the agent
    // destroys them before it allocates), and the tenant gets a range of its own when next seen.
    // The record is rewritten at once, so it never names a range another agent holds.
    let forgot = false;
    for (const [t, base] of Object.entries(this.rec.tenants)) {
      if (this.usable(base) && this.claims.claim(base)) continue;
      delete this.rec.tenants[t];
      delete this.rec.used[t];
      forgot = true;
    }
    if (forgot) this.save();
  }

  private usable(base: number): boolean {
    return this.o.slots.includes(base) && base !== this.o.imageBase;
  }

  /** The tenant's range, allocated on first use. */
  forTenant(tenant: string): number {
    this.rec.used[tenant] = this.clock();
    let base = this.rec.tenants[tenant];
    if (base === undefined) {
      base = this.free();
      this.rec.tenants[tenant] = base;
      // Only a new assignment is written (with an fsync); use times ride along with the next one.
      this.save();
    }
    return base;
  }

  /** The tenant's range if it has one. */
  rangeOf(tenant: string): number | undefined {
    return this.rec.tenants[tenant];
  }

  /** A range for a blank container: no tenant's. Give it back with `release` if no tenant adopts it. */
  spare(): number {
    const base = this.free();
    this.spares.add(base);
    return base;
  }

  /** A tenant with no range takes a blank container's spare range as its own. */
  adopt(base: number, tenant: string): void {
    if (!this.spares.delete(base) || this.rec.tenants[tenant] !== undefined) throw new Error(`range ${base} cannot be adopted by ${tenant}`);
    this.rec.tenants[tenant] = base;
    this.rec.used[tenant] = this.clock();
    this.save();
  }

  /** A blank container's spare range is free again (for other agents too, once its containers are gone). */
  release(base: number): void {
    this.spares.delete(base);
    this.settle();
  }

  /** Gives up every claim: for an agent that has stopped and destroyed its containers. */
  close(): void {
    this.claims.close();
  }

  /**
   * Releases the claims on ranges that are no longer assigned and have no container here. A range
   * released while its container is still being destroyed stays claimed until a later call finds
   * it empty, so another agent never starts a container beside a dying one.
   */
  private settle(): void {
    const assigned = this.assigned();
    for (const b of this.claims.bases()) if (!assigned.has(b) && !this.o.inUse(b)) this.claims.release(b);
  }

  private assigned(): Set<number> {
    return new Set([...Object.values(this.rec.tenants), ...this.spares]);
  }

  private free(): number {
    this.settle();
    const taken = this.assigned();
    // A range no one holds may still have a container being destroyed in it: skip those too.
    const open = this.o.slots.filter((b) => this.usable(b) && !taken.has(b) && !this.o.inUse(b));
    // Claiming is the costly test (a refused file lock costs ~0.2 ms here, and an agent scans past
    // every range its neighbours hold), and neighbours keep their tenants' ranges for long: ranges
    // refused lately are tried last, not skipped, so a range is never missed.
    const now = this.clock();
    const lately = (b: number) => now - (this.refused.get(b) ?? -Infinity) < REFUSED_RETRY_MS;
    const claim = (b: number) => {
      if (!this.claims.claim(b)) {
        this.refused.set(b, now);
        return false;
      }
      this.refused.delete(b);
      return true;
    };
    const base = [...open.filter((b) => !lately(b)), ...open.filter(lately)].find(claim);
    if (base !== undefined) return base;
    // Every range is held: take the one of the least recently used tenant that runs nothing here
    // (its claim stays with this allocator).
    const idle = Object.entries(this.rec.tenants)
      .filter(([, b]) => !this.o.inUse(b))
      .sort(([a], [b]) => (this.rec.used[a] ?? 0) - (this.rec.used[b] ?? 0));
    const [tenant, reclaimed] = idle[0] ?? [];
    if (tenant === undefined || reclaimed === undefined) throw new Error('no free id range: add ranges for root to /etc/subuid and /etc/subgid');
    delete this.rec.tenants[tenant];
    delete this.rec.used[tenant];
    // Written now, not with the next assignment: as a spare the range may be released, claimed by
    // another agent for its tenant, and the record must not still name this tenant for it.
    this.save();
    return reclaimed;
  }

  /** Written to a new file, fsynced, then renamed over the old: a crash leaves one or the other whole. */
  private save(): void {
    mkdirSync(dirname(this.o.file), { recursive: true, mode: 0o700 });
    const tmp = `${this.o.file}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(this.rec));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.o.file);
  }
}

/**
 * The recorded assignment, or a fresh one if the file is missing or damaged: the agent destroys
 * every container of its previous run before it allocates, so no live range is forgotten.
 */
function load(file: string): Record {
  try {
    const rec = JSON.parse(readFileSync(file, 'utf8')) as Partial<Record>;
    if (rec && typeof rec.tenants === 'object' && typeof rec.used === 'object') return { tenants: { ...rec.tenants }, used: { ...rec.used } };
  } catch {
    /* missing or damaged */
  }
  return { tenants: {}, used: {} };
}

/** root's ranges on this host, from /etc/subuid and /etc/subgid. */
export function hostSlots(): number[] {
  const read = (f: string) => (existsSync(f) ? readFileSync(f, 'utf8') : '');
  return slotsOf(parseSubids(read('/etc/subuid')), parseSubids(read('/etc/subgid')));
}
