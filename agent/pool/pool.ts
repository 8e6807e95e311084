import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { IdmapAllocator } from '../lxc/idmap.js';
import { eachBounded } from './bounded.js';
import { Container, type ContainerEnv } from './container.js';

export interface PoolOptions {
  env: ContainerEnv;
  images: () => string[];
  /** Host id ranges per tenant (see IdmapAllocator). */
  idmap: IdmapAllocator;
  /**
   * The one range every container of `image` uses, whatever its tenant (images whose jobs run as
   * root: their files must be owned by the container's root for package installs to write them).
   */
  sharedRange?: (image: string) => number | undefined;
  /** Blank containers kept ready per image. */
  warm: number;
  maxUses: number;
  idleTtlMs: number;
  /** Idle warm containers kept in all, and per tenant; past either the least recently used goes. */
  maxIdle: number;
  maxIdlePerTenant: number;
  /** Bytes a container may still hold after an attempt and go back to the idle pool (see holdsMemory). */
  idleMemoryMax: number;
  log: Logger;
  clock?: () => number;
}

export interface Lease {
  container: Container;
  kind: 'warm' | 'blank' | 'cold';
}

export interface PoolEvents {
  'pool:error': [{ error: unknown; image: string }];
  'pool:changed': [];
}

const key = (tenant: string, image: string) => `${tenant}\0${image}`;

/**
 * The agent's containers. Blank ones are pre-warmed per image and refilled in the background;
 * a container, once used by a tenant, is bound to (tenant, image) and only ever reused for that
 * pair; it is recycled after a bad end, `maxUses`, `idleTtlMs` idle, or an attempt that left more
 * than `idleMemoryMax` of memory in it, and when idle ones pass `maxIdle` (or `maxIdlePerTenant`)
 * the least recently used goes. One attempt per container.
 *
 * Every container maps its ids onto its tenant's own host range (IdmapAllocator). A blank one
 * starts in a spare range, so only a tenant without a range yet can take it (adopting the range);
 * a tenant that has one gets its idle warm container, or a new one started in its range.
 */
export class Pool extends EventEmitter<PoolEvents> {
  private readonly blank = new Map<string, Container[]>();
  private readonly idle = new Map<string, Container[]>();
  private readonly busy = new Set<Container>();
  private readonly starting = new Map<string, number>();
  private recycledCount = 0;
  /** Containers per id range that exist or are still being destroyed (see holdsRange). */
  private readonly rangeHolds = new Map<number, number>();
  private readonly recycling = new Set<Container>();
  /** After a failed start, an image's refill waits (doubling up to a minute) instead of spinning. */
  private readonly backoff = new Map<string, { until: number; ms: number }>();
  private stopped = false;
  private timer?: NodeJS.Timeout;
  private readonly clock: () => number;

  constructor(private readonly o: PoolOptions) {
    super();
    this.clock = o.clock ?? Date.now;
  }

  start(): void {
    this.refill();
    this.timer = setInterval(() => this.runOnce(), 1000);
    this.timer.unref();
  }

  /** Housekeeping: recycle idle containers past their TTL, top up blanks. */
  runOnce(): void {
    const now = this.clock();
    for (const [k, list] of this.idle) {
      const keep = list.filter((c) => now - c.lastUsed < this.o.idleTtlMs);
      for (const c of list) if (!keep.includes(c)) void this.recycle(c);
      if (keep.length) this.idle.set(k, keep);
      else this.idle.delete(k);
    }
    this.refill();
  }

  /** Tops blank containers up to the target per image, in the background. */
  refill(): void {
    if (this.stopped) return;
    for (const image of this.o.images()) {
      if ((this.backoff.get(image)?.until ?? 0) > this.clock()) continue;
      const have = (this.blank.get(image)?.length ?? 0) + (this.starting.get(image) ?? 0);
      for (let i = have; i < this.o.warm; i++) void this.startBlank(image);
    }
  }

  private async startBlank(image: string): Promise<void> {
    this.starting.set(image, (this.starting.get(image) ?? 0) + 1);
    let spare: number | undefined;
    try {
      const shared = this.o.sharedRange?.(image);
      if (shared === undefined) spare = this.o.idmap.spare();
      const c = await this.launch(image, shared ?? spare!);
      if (this.stopped) return void (await this.recycle(c));
      const list = this.blank.get(image) ?? [];
      list.push(c);
      this.blank.set(image, list);
      this.backoff.delete(image);
      this.emit('pool:changed');
    } catch (error) {
      if (spare !== undefined) this.o.idmap.release(spare);
      const ms = Math.min(60_000, (this.backoff.get(image)?.ms ?? 500) * 2);
      this.backoff.set(image, { until: this.clock() + ms, ms });
      this.o.log.error({ err: error, image }, 'could not start a blank container');
      this.emit('pool:error', { error, image });
    } finally {
      this.starting.set(image, (this.starting.get(image) ?? 1) - 1);
    }
  }

  /** A container whose executor went away is of no use: drop it wherever it is. */
  private forget(c: Container): void {
    if (this.busy.has(c)) return; // the runner sees the close and recycles it
    for (const m of [this.blank, this.idle]) {
      for (const [k, list] of m) {
        const i = list.indexOf(c);
        if (i >= 0) {
          list.splice(i, 1);
          if (!list.length) m.delete(k);
          void this.recycle(c);
        }
      }
    }
  }

  /**
   * A container for one attempt: the tenant's idle warm one for this image, else (for a tenant
   * with no id range here yet) a blank one, whose range becomes the tenant's, else a new one
   * started now in the tenant's range. `fresh` skips warm containers.
   */
  async acquire(tenant: string, image: string, fresh: boolean): Promise<Lease> {
    let kind: Lease['kind'] = 'cold';
    let c: Container | undefined;
    if (!fresh) {
      c = this.idle.get(key(tenant, image))?.pop();
      if (c) kind = 'warm';
    }
    const shared = this.o.sharedRange?.(image);
    // An executor may have died while its container sat idle (the close hook drops it, but not
    // before this turn of the event loop): never hand one out.
    while (c && !c.exec.alive) {
      void this.recycle(c);
      c = this.idle.get(key(tenant, image))?.pop();
    }
    if (!c) kind = 'cold';
    if (!c && (shared !== undefined || this.o.idmap.rangeOf(tenant) === undefined)) {
      c = this.blank.get(image)?.shift();
      if (c && !c.exec.alive) {
        void this.recycle(c);
        c = undefined;
      }
      if (c) {
        kind = 'blank';
        if (shared === undefined) this.o.idmap.adopt(c.idBase, tenant);
      }
    }
    if (!c) c = await this.launch(image, shared ?? this.o.idmap.forTenant(tenant));
    if (kind !== 'cold') this.refill();
    c.tenant = tenant;
    c.uses++;
    this.busy.add(c);
    this.emit('pool:changed');
    return { container: c, kind };
  }

  /** Gives a container back after an attempt: kept warm for its tenant, or recycled. */
  release(c: Container, recycle: boolean): void {
    this.busy.delete(c);
    c.lastUsed = this.clock();
    if (recycle || this.stopped || c.uses >= this.o.maxUses || !c.exec.alive || this.holdsMemory(c)) {
      void this.recycle(c);
    } else {
      const k = key(c.tenant!, c.image);
      const list = this.idle.get(k) ?? [];
      list.push(c);
      this.idle.set(k, list);
      this.capIdle(c.tenant!);
    }
    this.emit('pool:changed');
  }

  /**
   * Whether `c` holds more memory than an idle container may. The scheduler offers a node's
   * memory less the limits of running attempts only, so what a finished job left charged to its
   * container (files on its tmpfs /tmp, SysV shm segments nobody removed: 894 MB after one 1G
   * job here) would be promised to other tenants' jobs again, up to `maxIdle` times over, and the
   * OOM killer would take it back from them. Checked once, at release: an idle container cannot
   * grow, because only its executor is left in it (the runner recycles one with any other task)
   * and the executor allocates nothing while it waits. A cgroup that cannot be read is not kept.
   */
  private holdsMemory(c: Container): boolean {
    let bytes: number;
    try {
      bytes = c.cgroup.heldMemoryBytes();
    } catch (err) {
      this.o.log.warn({ err, container: c.name }, 'could not read the memory an idle container holds: recycling it');
      return true;
    }
    if (bytes <= this.o.idleMemoryMax) return false;
    this.o.log.info({ container: c.name, tenant: c.tenant, bytes, max: this.o.idleMemoryMax }, 'recycling a container its attempt left holding memory');
    return true;
  }

  /** Recycles the least recently used idle containers past the per-tenant and total caps. */
  private capIdle(tenant: string): void {
    const all = [...this.idle.values()].flat();
    const mine = all.filter((c) => c.tenant === tenant);
    const lru = (list: Container[]) => list.reduce((a, b) => (b.lastUsed < a.lastUsed ? b : a));
    if (mine.length > this.o.maxIdlePerTenant) this.evict(lru(mine));
    else if (all.length > this.o.maxIdle) this.evict(lru(all));
  }

  private evict(c: Container): void {
    const k = key(c.tenant!, c.image);
    const list = this.idle.get(k)!.filter((x) => x !== c);
    if (list.length) this.idle.set(k, list);
    else this.idle.delete(k);
    void this.recycle(c);
  }

  /**
   * Whether anything of this pool still maps onto the id range at `base`: a container starting,
   * running, idle or blank, or one whose destruction has not finished (its processes may live).
   */
  holdsRange(base: number): boolean {
    return (this.rangeHolds.get(base) ?? 0) > 0;
  }

  /** Starts a container in the range at `base`, which stays held until the container is destroyed. */
  private async launch(image: string, base: number): Promise<Container> {
    this.rangeHolds.set(base, (this.rangeHolds.get(base) ?? 0) + 1);
    try {
      const c = await Container.start(image, this.o.env, base);
      c.exec.once('close', () => this.forget(c));
      return c;
    } catch (err) {
      this.unhold(base);
      throw err;
    }
  }

  private unhold(base: number): void {
    const n = (this.rangeHolds.get(base) ?? 1) - 1;
    if (n > 0) this.rangeHolds.set(base, n);
    else this.rangeHolds.delete(base);
  }

  private async recycle(c: Container): Promise<void> {
    if (this.recycling.has(c)) return;
    this.recycling.add(c);
    this.recycledCount++;
    this.busy.delete(c);
    await c.destroy().catch((error: unknown) => this.o.log.warn({ err: error, container: c.name }, 'destroy failed'));
    this.recycling.delete(c);
    this.unhold(c.idBase);
    // A blank container no tenant adopted gives its spare range back once nothing runs in it,
    // so the host-wide claim on it goes too.
    if (c.tenant === undefined && this.o.sharedRange?.(c.image) === undefined) this.o.idmap.release(c.idBase);
  }

  /** What exists now: containers not yet destroyed (by name), and starts under way (no name yet). */
  remaining(): { containers: string[]; starting: number } {
    const all = new Set([...this.busy, ...[...this.blank.values()].flat(), ...[...this.idle.values()].flat(), ...this.recycling]);
    return { containers: [...all].map((c) => c.name), starting: [...this.starting.values()].reduce((n, x) => n + x, 0) };
  }

  summary() {
    const blank: Record<string, number> = {};
    for (const [image, list] of this.blank) blank[image] = list.length;
    const warm = [...this.idle].map(([k, list]) => {
      const [tenant, image] = k.split('\0') as [string, string];
      return { tenant, image, idle: list.length };
    });
    const idleCount = [...this.idle.values()].reduce((n, l) => n + l.length, 0);
    const blankCount = Object.values(blank).reduce((n, x) => n + x, 0);
    return { containers: idleCount + blankCount + this.busy.size, blank, warm, busy: this.busy.size, recycled: this.recycledCount };
  }

  /**
   * Destroys every container (busy ones too), `STOP_PARALLEL` at a time; after this, lxc-ls shows
   * only images. Blank containers still starting destroy themselves when they see `stopped`.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    const started = Date.now();
    const starting = this.remaining().starting;
    const all = [...this.busy, ...[...this.blank.values()].flat(), ...[...this.idle.values()].flat()];
    this.busy.clear();
    this.blank.clear();
    this.idle.clear();
    await eachBounded(all, STOP_PARALLEL, (c) => this.recycle(c));
    while (this.remaining().starting > 0 || this.recycling.size > 0) await new Promise((r) => setTimeout(r, 20));
    this.o.log.info({ containers: all.length, starting, ms: Date.now() - started }, 'destroyed the pool');
  }
}

/**
 * Containers destroyed at once when the pool stops. Measured on 2 cores (40 warm containers,
 * `corral up --warm 40` stopped by SIGTERM): 2 at a time took 7.2 s, 4 and 8 took 5.6 s, 16 and
 * all 40 at once 5.3 s. Past a few, more only queue for the same kernel locks; 8 keeps the
 * process count bounded at ~5 % of the fastest.
 */
const STOP_PARALLEL = 8;
