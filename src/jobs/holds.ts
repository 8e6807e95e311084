/**
 * Requests a tenant holds open (output follows and `?wait` holds), counted per tenant so one
 * tenant cannot tie up the gateway's sockets and event listeners.
 */
export class TenantHolds {
  private readonly open = new Map<string, number>();

  constructor(readonly max: number) {}

  /** A release function for one more hold, or undefined when the tenant holds `max` already. */
  take(tenant: string): (() => void) | undefined {
    const n = this.open.get(tenant) ?? 0;
    if (n >= this.max) return undefined;
    this.open.set(tenant, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.open.get(tenant) ?? 1) - 1;
      if (left > 0) this.open.set(tenant, left);
      else this.open.delete(tenant);
    };
  }

  /** Holds `tenant` has open now. */
  count(tenant: string): number {
    return this.open.get(tenant) ?? 0;
  }
}
