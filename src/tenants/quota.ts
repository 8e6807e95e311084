import { z } from '@hono/zod-openapi';
import { MIN_CPU, MIN_MEMORY_BYTES } from '../jobs/spec.js';

/** Per-tenant limits. Defaults apply to every field a tenant's stored quota leaves unset. */
export const DEFAULT_QUOTA = {
  maxConcurrent: 10,
  ratePerMinute: 600,
  /** Trigger fires (`POST /hooks/:id`) a minute. */
  firesPerMinute: 600,
  maxQueued: 1000,
  maxTimeoutSeconds: 3600,
  maxMemoryBytes: 1024 ** 3,
  maxCpu: 2,
  cpuSecondsPerDay: 36_000,
  maxOutputBytes: 1024 ** 2,
  /** Days a finished job (its output, attempts and deliveries) is kept; null: the gateway's `--retention-days`. */
  retentionDays: null,
} as const;

/**
 * A tenant's effective limits. Every limit is positive. The four that only pace a tenant —
 * `ratePerMinute`, `firesPerMinute`, `maxQueued`, `cpuSecondsPerDay` — may instead be `null`, meaning unlimited;
 * the ones that shape a single job (`maxConcurrent`, `maxTimeoutSeconds`, `maxMemoryBytes`,
 * `maxCpu`, `maxOutputBytes`) must be numbers, since a job always runs with some bound. Zero is
 * never a value: a zero concurrency or memory would accept jobs that can never run.
 * `retentionDays` is not a limit but how long finished jobs are kept: `null` is the gateway's default.
 *
 * @example PATCH /v1/tenants/acme {"quota": {"ratePerMinute": null, "maxConcurrent": 4}}
 */
export type Quota = {
  [K in keyof typeof DEFAULT_QUOTA]: K extends UnlimitedKey | 'retentionDays' ? number | null : number;
};
export type UnlimitedKey = 'ratePerMinute' | 'firesPerMinute' | 'maxQueued' | 'cpuSecondsPerDay';

/** A positive integer up to `max`. */
const limit = (max: number, min = 1) =>
  z.number().int('must be an integer').min(min, `must be at least ${min}`).max(max, `must be at most ${max}`);
/** A positive integer, or null for unlimited. */
const pace = (max: number) => limit(max).nullable().openapi({ description: 'null means unlimited' });

export const QuotaPatchSchema = z
  .object({
    maxConcurrent: limit(10_000),
    ratePerMinute: pace(10_000_000),
    firesPerMinute: pace(10_000_000),
    maxQueued: pace(10_000_000),
    maxTimeoutSeconds: limit(7 * 24 * 3600),
    // Below the smallest memory a job may ask for, no job could run.
    maxMemoryBytes: limit(1024 ** 4, MIN_MEMORY_BYTES),
    maxCpu: z.number().min(MIN_CPU, `must be at least ${MIN_CPU}`).max(1024, 'must be at most 1024'),
    cpuSecondsPerDay: pace(1_000_000_000),
    maxOutputBytes: limit(1024 ** 3),
    // At least a day: the callback retry schedule runs up to 24 h after a job ends.
    retentionDays: limit(36_500).nullable().openapi({ description: "Days a finished job is kept; null means the gateway's default (--retention-days)" }),
  })
  .partial()
  .strict()
  .openapi('Quota');

export function effectiveQuota(stored: Partial<Quota>): Quota {
  return { ...DEFAULT_QUOTA, ...stored };
}
