import { sqliteTable, text, integer, blob, index } from 'drizzle-orm/sqlite-core';
import { jobs } from './jobs.js';

/** Output chunks in arrival order; the per-job cap is enforced when they are written. */
export const output = sqliteTable(
  'output',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    jobId: text('job_id')
      .notNull()
      .references(() => jobs.id, { onDelete: 'cascade' }),
    attempt: integer('attempt').notNull(),
    stream: text('stream', { enum: ['stdout', 'stderr'] }).notNull(),
    data: blob('data', { mode: 'buffer' }).notNull(),
  },
  (t) => [index('output_job').on(t.jobId, t.id)],
);
