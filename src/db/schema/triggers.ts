import { sqliteTable, text, integer, primaryKey, index, foreignKey } from 'drizzle-orm/sqlite-core';
import { functions } from './functions.js';

/**
 * A webhook endpoint (`POST /hooks/:id`) that invokes a function when a signed request arrives.
 * Written by the triggers module (`src/triggers/`). Secrets are stored encrypted with a key kept
 * in the data directory, so a read of the database alone does not hand them out; after a rotation
 * the previous secret still verifies until `prevExpiresAt`. Deleting the function deletes its
 * triggers.
 */
export const triggers = sqliteTable(
  'triggers',
  {
    /** `trg_` + a ULID. */
    id: text('id').primaryKey(),
    tenant: text('tenant').notNull(),
    function: text('function').notNull(),
    kind: text('kind', { enum: ['standard', 'github'] }).notNull(),
    secretEnc: text('secret_enc').notNull(),
    prevSecretEnc: text('prev_secret_enc'),
    prevExpiresAt: integer('prev_expires_at'),
    createdAt: integer('created_at').notNull(),
  },
  (t) => [
    index('triggers_function').on(t.tenant, t.function),
    foreignKey({ columns: [t.tenant, t.function], foreignColumns: [functions.tenant, functions.name] }).onDelete('cascade'),
  ],
);

/**
 * Delivery ids a trigger has seen (`webhook-id`, `X-GitHub-Delivery`) and the job each made, so a
 * replay answers with that job instead of making a second one. Written by the triggers module in
 * the same transaction as the job. `jobId` has no foreign key on purpose: deleting the job must
 * not forget the delivery, or a replay would run it again.
 */
export const triggerDeliveries = sqliteTable(
  'trigger_deliveries',
  {
    triggerId: text('trigger_id')
      .notNull()
      .references(() => triggers.id, { onDelete: 'cascade' }),
    deliveryId: text('delivery_id').notNull(),
    jobId: text('job_id').notNull(),
    createdAt: integer('created_at').notNull(),
  },
  // created_at: old records are pruned once no sender could still retry them.
  (t) => [primaryKey({ columns: [t.triggerId, t.deliveryId] }), index('trigger_deliveries_created').on(t.createdAt)],
);
