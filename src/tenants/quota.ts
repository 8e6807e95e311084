import { z } from '@hono/zod-openapi';

/** Per-tenant limits. Defaults apply to every field a tenant's stored quota leaves unset. */
export const DEFAULT_QUOTA = {
  maxConcurrent: 10,
  ratePerMinute: 600,
  maxQueued: 1000,
  maxTimeoutSeconds: 3600,
  maxMemoryBytes: 1024 ** 3,
  maxCpu: 2,
  cpuSecondsPerDay: 36_000,
  maxOutputBytes: 1024 ** 2,
} as const;

export type Quota = { [K in keyof typeof DEFAULT_QUOTA]: number };

const limit = (max: number) => z.number().int('must be an integer').min(0).max(max);

export const QuotaPatchSchema = z
  .object({
    maxConcurrent: limit(10_000),
    ratePerMinute: limit(10_000_000),
    maxQueued: limit(10_000_000),
    maxTimeoutSeconds: limit(7 * 24 * 3600),
    maxMemoryBytes: limit(1024 ** 4),
    maxCpu: z.number().min(0).max(1024),
    cpuSecondsPerDay: limit(1_000_000_000),
    maxOutputBytes: limit(1024 ** 3),
  })
  .partial()
  .strict()
  .openapi('Quota');

export function effectiveQuota(stored: Partial<Quota>): Quota {
  return { ...DEFAULT_QUOTA, ...stored };
}
