import { sqliteTable, text, integer, real, primaryKey, index } from 'drizzle-orm/sqlite-core';
import { jobs } from './jobs.js';

/** One execution of a job in one container on one agent. */
export const attempts = sqliteTable(
  'attempts',
  {
    jobId: text('job_id')
      .notNull()
      .references(() => jobs.id, { onDelete: 'cascade' }),
    n: integer('n').notNull(),
    tenant: text('tenant').notNull(),
    agent: text('agent').notNull(),
    fence: integer('fence').notNull(),
    container: text('container'),
    claimedAt: integer('claimed_at').notNull(),
    startedAt: integer('started_at'),
    endedAt: integer('ended_at'),
    exitCode: integer('exit_code'),
    signal: text('signal'),
    reason: text('reason'),
    cpuSeconds: real('cpu_seconds'),
    /** Wall time the agent measured for the attempt (usage metering); null for attempts it never reported. */
    wallSeconds: real('wall_seconds'),
    peakMemoryBytes: integer('peak_memory_bytes'),
  },
  (t) => [primaryKey({ columns: [t.jobId, t.n] }), index('attempts_tenant_ended').on(t.tenant, t.endedAt)],
);
