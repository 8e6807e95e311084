import { sqliteTable, text, integer, real, primaryKey, index } from 'drizzle-orm/sqlite-core';

/**
 * Per-tenant, per-UTC-day usage, rolled up by the usage meter in the same transaction as each
 * attempt's end (never recomputed by scanning attempts). `gbSeconds` is the memory limit in GB
 * × wall seconds; `peakMemoryBytes` is the day's maximum; `failures` counts failed attempts by
 * reason, e.g. {"timeout": 2, "oom": 1}.
 */
export const usageDaily = sqliteTable(
  'usage_daily',
  {
    tenant: text('tenant').notNull(),
    /** 'YYYY-MM-DD', UTC. */
    day: text('day').notNull(),
    jobs: integer('jobs').notNull().default(0),
    attempts: integer('attempts').notNull().default(0),
    cpuSeconds: real('cpu_seconds').notNull().default(0),
    wallSeconds: real('wall_seconds').notNull().default(0),
    gbSeconds: real('gb_seconds').notNull().default(0),
    peakMemoryBytes: integer('peak_memory_bytes').notNull().default(0),
    failures: text('failures', { mode: 'json' }).$type<Record<string, number>>().notNull().default({}),
  },
  // usage_daily_day: the admin's all-tenant view reads by day.
  (t) => [primaryKey({ columns: [t.tenant, t.day] }), index('usage_daily_day').on(t.day)],
);

/**
 * Per-tenant, per-UTC-hour counts of jobs that took a final state (the console's jobs-per-hour
 * chart), maintained by the usage meter in the same transaction as each job's end. `hour` is
 * 'YYYY-MM-DDTHH'. `failures` counts the jobs of that hour that did not succeed.
 */
export const usageHourly = sqliteTable(
  'usage_hourly',
  {
    tenant: text('tenant').notNull(),
    hour: text('hour').notNull(),
    jobs: integer('jobs').notNull().default(0),
    failures: integer('failures').notNull().default(0),
  },
  // usage_hourly_hour: retention prunes old hours by this index.
  (t) => [primaryKey({ columns: [t.tenant, t.hour] }), index('usage_hourly_hour').on(t.hour)],
);
