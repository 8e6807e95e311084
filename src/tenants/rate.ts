/**
 * Per-tenant submissions per minute: a sliding window of two fixed one-minute buckets,
 * weighted by how far into the current minute we are (the approximation Cloudflare and
 * Redis-cell use). O(1) memory per tenant.
 */
export class RateLimiter {
  private readonly windows = new Map<string, { minute: number; current: number; previous: number }>();

  /** Counts one submission if it fits; otherwise returns the seconds until one would. */
  take(tenant: string, perMinute: number, now = Date.now()): { ok: true } | { ok: false; retryAfter: number } {
    const minute = Math.floor(now / 60_000);
    let w = this.windows.get(tenant);
    if (!w || w.minute < minute - 1) w = { minute, current: 0, previous: 0 };
    else if (w.minute === minute - 1) w = { minute, current: 0, previous: w.current };
    this.windows.set(tenant, w);
    const elapsed = (now % 60_000) / 60_000;
    const estimate = w.previous * (1 - elapsed) + w.current;
    if (estimate + 1 > perMinute) return { ok: false, retryAfter: Math.max(1, Math.ceil(60 * (1 - elapsed))) };
    w.current++;
    return { ok: true };
  }
}
