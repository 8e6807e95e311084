import { sqliteTable, text, integer, primaryKey, index } from 'drizzle-orm/sqlite-core';

/** `Idempotency-Key` records, scoped per tenant; `jobId` is null while the first request is in flight. */
export const idempotencyKeys = sqliteTable(
  'idempotency_keys',
  {
    tenant: text('tenant').notNull(),
    key: text('key').notNull(),
    bodyHash: text('body_hash').notNull(),
    jobId: text('job_id'),
    createdAt: integer('created_at').notNull(),
  },
  // idempotency_keys_created: retention expires old keys by this index.
  (t) => [primaryKey({ columns: [t.tenant, t.key] }), index('idempotency_keys_created').on(t.createdAt)],
);
