import { eq } from 'drizzle-orm';
import type { Store } from '../db/open.js';
import { tenantSecrets } from '../db/schema/index.js';
import type { SecretBox } from '../secrets/box.js';
import { newSecret } from '../webhooks/signature.js';

/** How long a rotated-out callback secret keeps signing. */
export const ROTATION_OVERLAP_MS = 24 * 3_600_000;

/**
 * Each tenant's callback signing secret (`whsec_…`), sealed at rest with the data directory's
 * SecretBox and created on first use. After a rotation the previous secret signs too, for
 * `ROTATION_OVERLAP_MS`, so receivers can switch without losing a delivery; a second rotation
 * within that window drops the oldest secret (two at most sign).
 */
export class CallbackSecrets {
  constructor(
    private readonly store: Store,
    private readonly box: SecretBox,
    private readonly clock: () => number = Date.now,
  ) {}

  private context(tenant: string): string {
    return `callback:${tenant}`;
  }

  /**
   * The tenant's current secret, created (and on disk) before it is returned: a receiver must
   * never be given a secret a crash could take back.
   */
  async current(tenant: string): Promise<string> {
    const row = this.row(tenant);
    if (row) return this.box.open(row.callbackSecretEnc, this.context(tenant));
    const fresh = this.box.seal(newSecret(), this.context(tenant));
    // Two first calls at once: the first insert wins, both answer what was kept.
    await this.store.commit(() => this.store.db.insert(tenantSecrets).values({ tenant, callbackSecretEnc: fresh }).onConflictDoNothing().run());
    return this.box.open(this.row(tenant)!.callbackSecretEnc, this.context(tenant));
  }

  /** Replaces the secret with a new one; the old one keeps signing for 24 h. Returns the new one. */
  async rotate(tenant: string): Promise<string> {
    await this.current(tenant);
    const secret = newSecret();
    const sealed = this.box.seal(secret, this.context(tenant));
    const now = this.clock();
    await this.store.commit(() => {
      const row = this.row(tenant)!;
      this.store.db
        .update(tenantSecrets)
        .set({ callbackSecretEnc: sealed, prevCallbackSecretEnc: row.callbackSecretEnc, prevExpiresAt: now + ROTATION_OVERLAP_MS })
        .where(eq(tenantSecrets.tenant, tenant))
        .run();
    });
    return secret;
  }

  /** The secrets that sign a delivery at `now`: the current one first, then the previous one while it lasts. */
  async signing(tenant: string, now: number): Promise<string[]> {
    const current = await this.current(tenant);
    const row = this.row(tenant)!;
    const out = [current];
    if (row.prevCallbackSecretEnc && row.prevExpiresAt !== null && row.prevExpiresAt > now) {
      out.push(this.box.open(row.prevCallbackSecretEnc, this.context(tenant)));
    }
    return out;
  }

  private row(tenant: string) {
    return this.store.db.select().from(tenantSecrets).where(eq(tenantSecrets.tenant, tenant)).get();
  }
}
