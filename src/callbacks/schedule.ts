/**
 * When a callback delivery is tried again. Exponential backoff with full jitter (the wait before
 * try n+1 is uniform in [floor, min(cap, base · 2^(n-1))]), so receivers that come back after an
 * outage are not hit by every gateway's retries in the same second; a `Retry-After` on 429/503
 * replaces the backoff, within bounds. The schedule ends after `maxTries` or `maxAgeMs`.
 */
export interface RetrySchedule {
  baseMs: number;
  capMs: number;
  /** No retry sooner than this (full jitter could otherwise draw 0). */
  floorMs: number;
  maxTries: number;
  /** Counted from the job's end: no try is scheduled later than this. */
  maxAgeMs: number;
  /** The longest `Retry-After` honoured; a longer one is cut to this. */
  maxRetryAfterMs: number;
}

export const DEFAULT_SCHEDULE: RetrySchedule = {
  baseMs: 5_000,
  capMs: 3_600_000,
  floorMs: 1_000,
  maxTries: 12,
  maxAgeMs: 24 * 3_600_000,
  maxRetryAfterMs: 3_600_000,
};

/** The wait after failed try `n` (1-based). `random` is in [0, 1). */
export function backoffMs(n: number, s: RetrySchedule, random: () => number): number {
  const ceiling = Math.min(s.capMs, s.baseMs * 2 ** Math.min(n - 1, 40));
  return Math.max(s.floorMs, Math.floor(random() * ceiling));
}

/**
 * A `Retry-After` header (delta-seconds or an HTTP date) as a wait in ms from `now`, bounded to
 * [floorMs, maxRetryAfterMs]; undefined when absent or unreadable (the backoff applies then).
 */
export function retryAfterMs(header: string | undefined, now: number, s: RetrySchedule): number | undefined {
  if (header === undefined) return undefined;
  const text = header.trim();
  let ms: number;
  if (/^\d{1,10}$/.test(text)) ms = Number(text) * 1000;
  else {
    // An HTTP date (IMF-fixdate and the obsolete forms Date.parse reads); not a bare number.
    if (text.length > 64 || !/[a-z]/i.test(text)) return undefined;
    const at = Date.parse(text);
    if (Number.isNaN(at)) return undefined;
    ms = at - now;
  }
  return Math.min(s.maxRetryAfterMs, Math.max(s.floorMs, ms));
}
