import { sqliteTable, text, integer, real, primaryKey } from 'drizzle-orm/sqlite-core';

/**
 * A tenant's saved job template, invoked by `POST /v1/functions/:name/invoke` or a trigger.
 * Written by `src/functions/service.ts` only. `version` starts at 1 and grows by one on every
 * change; an invocation copies the function into the job's spec, so a later edit never changes a
 * job already queued. Unset limits (`timeout`, `cpu`/`cpuset`, `memory`) are null and filled
 * from the tenant's quota at invoke, as for an ad-hoc job.
 */
export const functions = sqliteTable(
  'functions',
  {
    tenant: text('tenant').notNull(),
    name: text('name').notNull(),
    version: integer('version').notNull(),
    image: text('image').notNull(),
    /** A shell line (string) or an argv (array). */
    command: text('command', { mode: 'json' }).$type<string | string[]>().notNull(),
    /** Seconds per attempt; null: the job default (a minute, or the tenant's maximum if lower). */
    timeout: real('timeout'),
    retries: integer('retries').notNull(),
    cpu: real('cpu'),
    cpuset: text('cpuset'),
    /** Bytes. */
    memory: integer('memory'),
    env: text('env', { mode: 'json' }).$type<Record<string, string>>().notNull(),
    /** Reserved concurrency: at most this many of the function's jobs run at once (≤ the tenant's maxConcurrent). */
    maxConcurrent: integer('max_concurrent'),
    /** The content type of a synchronous invoke's body (the function's stdout). */
    contentType: text('content_type').notNull(),
    description: text('description'),
    callbackUrl: text('callback_url'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenant, t.name] })],
);
