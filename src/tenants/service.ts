import { eq } from 'drizzle-orm';
import type { Store } from '../db/open.js';
import { tenants } from '../db/schema/index.js';
import { Conflict, NotFound } from '../errors/domain.js';
import { effectiveQuota, type Quota } from './quota.js';

export interface TenantView {
  id: string;
  quota: Quota;
  createdAt: string;
}

/** Tenants and their quotas; kept in memory as well, since every request checks its tenant. */
export class TenantService {
  private readonly known = new Map<string, { stored: Partial<Quota>; quota: Quota; createdAt: number }>();

  constructor(private readonly store: Store) {
    for (const t of store.db.select().from(tenants).all()) {
      this.known.set(t.id, { stored: t.quota as Partial<Quota>, quota: effectiveQuota(t.quota as Partial<Quota>), createdAt: t.createdAt });
    }
  }

  exists = (id: string): boolean => this.known.has(id);

  quota(id: string): Quota {
    const t = this.known.get(id);
    if (!t) throw new NotFound(`tenant ${id} does not exist`, 'tenant');
    return t.quota;
  }

  async create(id: string, quota: Partial<Quota> = {}, now = Date.now()): Promise<TenantView> {
    if (this.known.has(id)) throw new Conflict(`tenant ${id} already exists`, 'id');
    await this.store.commit(() => {
      // Two creates of one id may both pass the check above: the second finds the row here.
      const { changes } = this.store.db.insert(tenants).values({ id, quota, createdAt: now }).onConflictDoNothing().run();
      if (changes === 0) throw new Conflict(`tenant ${id} already exists`, 'id');
    });
    this.known.set(id, { stored: quota, quota: effectiveQuota(quota), createdAt: now });
    return this.get(id);
  }

  get(id: string): TenantView {
    const t = this.known.get(id);
    if (!t) throw new NotFound(`tenant ${id} does not exist`, 'id');
    return { id, quota: t.quota, createdAt: new Date(t.createdAt).toISOString() };
  }

  async updateQuota(id: string, patch: Partial<Quota>): Promise<TenantView> {
    if (!this.known.has(id)) throw new NotFound(`tenant ${id} does not exist`, 'id');
    // Merged with the stored quota as the commit runs, not as the request arrived: two PATCHes in
    // flight at once (of different fields) then both hold, and neither undoes the other.
    await this.store.commit(() => {
      const row = this.store.db.select({ quota: tenants.quota }).from(tenants).where(eq(tenants.id, id)).get();
      this.store.db.update(tenants).set({ quota: { ...(row?.quota as Partial<Quota>), ...patch } }).where(eq(tenants.id, id)).run();
    });
    // What is on disk now, whichever of several PATCHes resolved last.
    const row = this.store.db.select().from(tenants).where(eq(tenants.id, id)).get()!;
    const stored = row.quota as Partial<Quota>;
    this.known.set(id, { stored, quota: effectiveQuota(stored), createdAt: row.createdAt });
    return this.get(id);
  }

  ids(): string[] {
    return [...this.known.keys()];
  }
}
