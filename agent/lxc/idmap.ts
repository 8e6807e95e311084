import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

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
 */
export class IdmapAllocator {
  private readonly rec: Record;
  private readonly clock: () => number;
  /** Ranges of blank containers, not yet any tenant's. */
  private readonly spares = new Set<number>();

  constructor(private readonly o: IdmapOptions) {
    this.clock = o.clock ?? Date.now;
    this.rec = load(o.file);
    // A range the host no longer grants (subuid edited) is forgotten.
    for (const [t, base] of Object.entries(this.rec.tenants)) if (!this.usable(base)) delete this.rec.tenants[t];
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

  /** A blank container's spare range is free again. */
  release(base: number): void {
    this.spares.delete(base);
  }

  private free(): number {
    const taken = new Set([...Object.values(this.rec.tenants), ...this.spares]);
    // A range no one holds may still have a container being destroyed in it: skip those too.
    const base = this.o.slots.find((b) => this.usable(b) && !taken.has(b) && !this.o.inUse(b));
    if (base !== undefined) return base;
    // Every range is held: take the one of the least recently used tenant that runs nothing here.
    const idle = Object.entries(this.rec.tenants)
      .filter(([, b]) => !this.o.inUse(b))
      .sort(([a], [b]) => (this.rec.used[a] ?? 0) - (this.rec.used[b] ?? 0));
    const [tenant, reclaimed] = idle[0] ?? [];
    if (tenant === undefined || reclaimed === undefined) throw new Error('no free id range: add ranges for root to /etc/subuid and /etc/subgid');
    delete this.rec.tenants[tenant];
    delete this.rec.used[tenant];
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
