import { sqliteTable, text, integer, real, blob, index, uniqueIndex } from 'drizzle-orm/sqlite-core';
import { sql } from 'drizzle-orm';
import type { JobSpec } from '../../jobs/spec.js';

/**
 * One invocation. Only `src/queue/machine.ts` writes `state` and the lease columns.
 * `fence` grows by one on every claim; a write that carries an older fence changes nothing.
 */
export const jobs = sqliteTable(
  'jobs',
  {
    id: text('id').primaryKey(),
    tenant: text('tenant').notNull(),
    name: text('name'),
    /** The function this job was invoked from (its name then), and that function's version; null for ad-hoc jobs. */
    function: text('function'),
    functionVersion: integer('function_version'),
    state: text('state').notNull(),
    image: text('image').notNull(),
    /** The request with defaults filled, without its stdin (kept apart below: it can be megabytes). */
    spec: text('spec', { mode: 'json' }).$type<JobSpec>().notNull(),
    /** The job's stdin bytes; read only to send the job to an agent. */
    stdin: blob('stdin', { mode: 'buffer' }),
    /**
     * What hot paths need of the spec, in columns of their own so that scheduling, output and
     * metering never parse a spec (null on rows written before these columns existed).
     */
    memory: integer('memory'),
    cpu: real('cpu'),
    cpuset: text('cpuset'),
    maxOutputBytes: integer('max_output_bytes'),
    callbackUrl: text('callback_url'),
    retries: integer('retries').notNull(),
    /** Failed attempts that count against `retries` (platform losses do not). */
    failures: integer('failures').notNull().default(0),
    platformFailures: integer('platform_failures').notNull().default(0),
    attemptCount: integer('attempt_count').notNull().default(0),
    fence: integer('fence').notNull().default(0),
    runAfter: integer('run_after').notNull(),
    agent: text('agent'),
    leaseExpiresAt: integer('lease_expires_at'),
    cancelRequested: integer('cancel_requested', { mode: 'boolean' }).notNull().default(false),
    exitCode: integer('exit_code'),
    signal: text('signal'),
    reason: text('reason'),
    /** Why the gateway ended a job itself (reason `rejected` or `unplaceable`), in words. */
    detail: text('detail'),
    createdAt: integer('created_at').notNull(),
    startedAt: integer('started_at'),
    endedAt: integer('ended_at'),
    outputBytes: integer('output_bytes').notNull().default(0),
    outputTruncated: integer('output_truncated', { mode: 'boolean' }).notNull().default(false),
  },
  (t) => [
    uniqueIndex('jobs_tenant_name').on(t.tenant, t.name),
    index('jobs_tenant_id').on(t.tenant, t.id),
    // The dispatch query walks only a tenant's queued rows, oldest first.
    index('jobs_claimable').on(t.tenant, t.runAfter, t.id).where(sql`state = 'queued'`),
    // Running rows are bounded by agent slots: per-tenant concurrency counts and the lease reaper use this.
    index('jobs_running').on(t.tenant, t.leaseExpiresAt).where(sql`state = 'running'`),
    // Listing a function's jobs, newest first.
    index('jobs_tenant_function').on(t.tenant, t.function, t.id).where(sql`function IS NOT NULL`),
    // Retention: a tenant's finished jobs, oldest end first, swept in small batches.
    index('jobs_tenant_ended').on(t.tenant, t.endedAt).where(sql`state NOT IN ('queued', 'running')`),
  ],
);
