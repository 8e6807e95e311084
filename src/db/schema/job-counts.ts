import { sqliteTable, text, integer, primaryKey } from 'drizzle-orm/sqlite-core';

/**
 * How many finished jobs each tenant has in each final state, kept exact by SQLite triggers on
 * `jobs` (a job reaching a final state, leaving one, or being deleted — by any path, retention
 * included), so that /metrics reads a few rows per tenant instead of counting every stored job:
 * with 1,000,000 of them that count took ~1.3 s of the event loop per scrape. Queued and running
 * jobs are not here: their partial indexes count them, bounded by the queue and the agents'
 * slots, and the hot path (insert, claim, retry) fires no trigger body. The triggers live in
 * custom migrations (drizzle's schema cannot declare them); a job's end costs one upsert more.
 */
export const jobCounts = sqliteTable(
  'job_counts',
  {
    tenant: text('tenant').notNull(),
    state: text('state').notNull(),
    n: integer('n').notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.state] })],
);
