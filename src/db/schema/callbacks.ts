import { sqliteTable, text, integer, primaryKey, index } from 'drizzle-orm/sqlite-core';
import { jobs } from './jobs.js';

export const CALLBACK_STATES = ['pending', 'delivered', 'failed', 'gone'] as const;
export type CallbackState = (typeof CALLBACK_STATES)[number];

/**
 * The callback outbox: one row per job end to announce to a `callbackUrl`, inserted in the same
 * transaction as the job's end and worked by the callback deliverer (`src/callbacks/`) until a
 * 2xx (`delivered`), a 410 (`gone`) or the end of the retry schedule (`failed`). `nextAt` is when
 * the next try is due; the deliverer polls `(state, nextAt)`. Deleting the job deletes its
 * deliveries.
 */
export const callbackDeliveries = sqliteTable(
  'callback_deliveries',
  {
    id: text('id').primaryKey(),
    jobId: text('job_id')
      .notNull()
      .references(() => jobs.id, { onDelete: 'cascade' }),
    tenant: text('tenant').notNull(),
    url: text('url').notNull(),
    state: text('state', { enum: CALLBACK_STATES }).notNull(),
    tries: integer('tries').notNull().default(0),
    nextAt: integer('next_at').notNull(),
    lastStatus: integer('last_status'),
    lastError: text('last_error'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
  },
  (t) => [index('callback_deliveries_due').on(t.state, t.nextAt), index('callback_deliveries_job').on(t.jobId)],
);

/** Each try of a callback delivery (`GET /v1/jobs/:id/deliveries`), written by the deliverer. */
export const callbackTries = sqliteTable(
  'callback_tries',
  {
    deliveryId: text('delivery_id')
      .notNull()
      .references(() => callbackDeliveries.id, { onDelete: 'cascade' }),
    /** 1, 2, … per delivery. */
    n: integer('n').notNull(),
    at: integer('at').notNull(),
    /** The receiver's HTTP status; null when no answer came (refused, timed out, unreachable). */
    status: integer('status'),
    error: text('error'),
    durationMs: integer('duration_ms').notNull(),
  },
  (t) => [primaryKey({ columns: [t.deliveryId, t.n] })],
);
