import type Database from 'better-sqlite3';

/**
 * The queue's statements, one per operation, prepared once. Raw SQL rather than the query
 * builder: these run several times per job and the builder's per-call cost showed in
 * bench/queue.ts. Every statement that writes a running job is guarded by its fence.
 */
export function prepareQueueSql(db: Database.Database) {
  return {
    insertJob: db.prepare(
      `INSERT INTO jobs (id, tenant, name, function, function_version, state, image, spec, stdin, memory, cpu, cpuset, max_output_bytes,
         callback_url, retries, run_after, created_at)
       VALUES (@id, @tenant, @name, @function, @functionVersion, 'queued', @image, @spec, @stdin, @memory, @cpu, @cpuset, @maxOutputBytes,
         @callbackUrl, @retries, @runAfter, @createdAt)`,
    ),
    claim: db.prepare(
      `UPDATE jobs SET state = 'running', fence = max(fence + 1, @fenceFloor), agent = @agent, lease_expires_at = @leaseExpiresAt,
         attempt_count = attempt_count + 1
       WHERE id = @id AND state = 'queued' AND run_after <= @now
       RETURNING tenant, fence, attempt_count AS n`,
    ),
    insertAttempt: db.prepare(
      `INSERT INTO attempts (job_id, n, tenant, agent, fence, claimed_at) VALUES (@jobId, @n, @tenant, @agent, @fence, @now)`,
    ),
    startAttempt: db.prepare(
      `UPDATE attempts SET started_at = @now, container = @container
       WHERE job_id = @jobId AND fence = @fence AND ended_at IS NULL`,
    ),
    // `@agent` NULL: any holder (the gateway's own transitions); otherwise only the agent that holds the attempt.
    startJob: db.prepare(
      `UPDATE jobs SET started_at = coalesce(started_at, @now)
       WHERE id = @jobId AND fence = @fence AND state = 'running' AND (@agent IS NULL OR agent = @agent)`,
    ),
    renewJob: db.prepare(
      `UPDATE jobs SET lease_expires_at = @leaseExpiresAt WHERE id = @jobId AND fence = @fence AND state = 'running' AND agent = @agent
       RETURNING cancel_requested AS cancelRequested`,
    ),
    runningForFence: db.prepare(
      `SELECT tenant, retries, failures, platform_failures AS platformFailures, cancel_requested AS cancelRequested,
              attempt_count AS n, spec
       FROM jobs WHERE id = @jobId AND fence = @fence AND state = 'running' AND (@agent IS NULL OR agent = @agent)`,
    ),
    endAttempt: db.prepare(
      `UPDATE attempts SET ended_at = @now, exit_code = @exitCode, signal = @signal, reason = @reason,
         cpu_seconds = @cpuSeconds, peak_memory_bytes = @peakMemoryBytes
       WHERE job_id = @jobId AND fence = @fence AND ended_at IS NULL`,
    ),
    finishJob: db.prepare(
      `UPDATE jobs SET state = @state, exit_code = @exitCode, signal = @signal, reason = @reason, ended_at = @now,
         failures = @failures, platform_failures = @platformFailures, agent = NULL, lease_expires_at = NULL
       WHERE id = @jobId AND fence = @fence AND state = 'running'`,
    ),
    requeueJob: db.prepare(
      `UPDATE jobs SET state = 'queued', run_after = @runAfter, exit_code = @exitCode, signal = @signal, reason = @reason,
         failures = @failures, platform_failures = @platformFailures, agent = NULL, lease_expires_at = NULL
       WHERE id = @jobId AND fence = @fence AND state = 'running'`,
    ),
    cancelQueued: db.prepare(
      `UPDATE jobs SET state = 'cancelled', reason = 'cancelled', ended_at = @now WHERE id = @jobId AND state = 'queued'
       RETURNING tenant`,
    ),
    rejectQueued: db.prepare(
      `UPDATE jobs SET state = 'failed', reason = @reason, detail = @detail, ended_at = @now WHERE id = @jobId AND state = 'queued'
       RETURNING tenant`,
    ),
    requestCancel: db.prepare(
      `UPDATE jobs SET cancel_requested = 1 WHERE id = @jobId AND state = 'running' RETURNING agent, fence, tenant`,
    ),
    // Every running attempt's lease starts over at gateway start (see JobMachine.renewAll).
    renewAll: db.prepare(`UPDATE jobs SET lease_expires_at = max(lease_expires_at, @leaseExpiresAt) WHERE state = 'running'`),
    expired: db.prepare(
      `SELECT id, fence FROM jobs WHERE state = 'running' AND lease_expires_at < @now ORDER BY lease_expires_at LIMIT 500`,
    ),
    deleteJob: db.prepare(`DELETE FROM jobs WHERE id = @jobId`),
    memoryOf: db.prepare(`SELECT coalesce(memory, json_extract(spec, '$.memory')) FROM jobs WHERE id = ?`).pluck(),
    stateOf: db.prepare(`SELECT state, agent, fence, tenant FROM jobs WHERE id = @jobId`),
  };
}

export type QueueSql = ReturnType<typeof prepareQueueSql>;
