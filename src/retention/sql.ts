import type Database from 'better-sqlite3';

/**
 * The sweep's statements, one per kind of row. Each deletes at most `@batch` rows found through
 * an index ordered by age, so one transaction's work is bounded however far behind the sweep is.
 * Rows are picked by rowid: the index holds it, and the outer DELETE then finds each row directly.
 */
export function prepareRetentionSql(db: Database.Database) {
  return {
    // jobs_tenant_ended (tenant, ended_at) is partial on exactly this state test, so only finished
    // jobs are ever looked at, never a queued or running one. A job whose callback is still being
    // retried stays until its delivery ends. Attempts, output, callback deliveries and their tries
    // go with the job (ON DELETE CASCADE, each on an index of its job id).
    jobs: db.prepare(
      `DELETE FROM jobs WHERE rowid IN (
         SELECT rowid FROM jobs j
         WHERE j.tenant = @tenant AND j.state NOT IN ('queued', 'running') AND j.ended_at < @before
           AND NOT EXISTS (SELECT 1 FROM callback_deliveries d WHERE d.job_id = j.id AND d.state = 'pending')
         ORDER BY j.ended_at LIMIT @batch)`,
    ),
    // The primary key (tenant, hour): hours sort as text ('YYYY-MM-DDTHH').
    usageHours: db.prepare(
      `DELETE FROM usage_hourly WHERE rowid IN (
         SELECT rowid FROM usage_hourly WHERE tenant = @tenant AND hour < @beforeHour LIMIT @batch)`,
    ),
    idempotencyKeys: db.prepare(
      `DELETE FROM idempotency_keys WHERE rowid IN (
         SELECT rowid FROM idempotency_keys WHERE created_at < @before ORDER BY created_at LIMIT @batch)`,
    ),
    triggerDeliveries: db.prepare(
      `DELETE FROM trigger_deliveries WHERE rowid IN (
         SELECT rowid FROM trigger_deliveries WHERE created_at < @before ORDER BY created_at LIMIT @batch)`,
    ),
  };
}

export type RetentionSql = ReturnType<typeof prepareRetentionSql>;
