import type Database from 'better-sqlite3';
import { cpusetSize } from '../jobs/admission.js';
import type { AttemptEnd, JobEnd, JobMachine } from '../queue/machine.js';

const GB = 1024 ** 3;

/** The UTC day of `ms` as 'YYYY-MM-DD', the key of `usage_daily`. */
export const utcDay = (ms: number): string => new Date(ms).toISOString().slice(0, 10);

/** The UTC hour of `ms` as 'YYYY-MM-DDTHH', the key of `usage_hourly`. */
export const utcHour = (ms: number): string => new Date(ms).toISOString().slice(0, 13);

/** Milliseconds from `ms` to the next UTC midnight (when the daily budget starts again). */
export const msToNextUtcDay = (ms: number): number => 86_400_000 - (ms % 86_400_000);

/** The CPUs a job may use at once: its `cpu`, or the size of its `cpuset`. */
export function cpuLimitOf(cpu: number | null, cpuset: string | null): number {
  if (typeof cpu === 'number' && cpu > 0) return cpu;
  if (typeof cpuset === 'string') return cpusetSize(cpuset);
  return 0;
}

/**
 * Rolls every attempt's end up into `usage_daily` (and each job's end into `usage_hourly`), inside the transaction of the end itself
 * (the machine's hooks), so usage can never disagree with the attempts it counts: an end that
 * rolls back takes its usage with it.
 *
 * - per attempt: attempts, CPU-seconds, wall-seconds, GB-seconds (the job's memory limit in GB
 *   × wall seconds), the day's peak memory; the attempt's own `wall_seconds` is written too.
 * - per job, once, when it takes a final state (by an attempt's end, a cancel while queued, or
 *   the gateway ending it `rejected`/`unplaceable`): jobs, and failures by the job's reason
 *   when it did not succeed; and in `usage_hourly` the hour's jobs and failures.
 *
 * Everything is charged to the UTC day (and hour) of the end.
 */
export class UsageMeter {
  private readonly q;

  constructor(db: Database.Database, machine: JobMachine) {
    this.q = {
      // Attempt n of a job is its attempt_count at claim; the primary key finds it.
      attempt: db.prepare(
        `SELECT coalesce(j.memory, json_extract(j.spec, '$.memory')) AS memory,
                CASE WHEN j.memory IS NULL THEN json_extract(j.spec, '$.cpu') ELSE j.cpu END AS cpu,
                CASE WHEN j.memory IS NULL THEN json_extract(j.spec, '$.cpuset') ELSE j.cpuset END AS cpuset,
                a.n AS n, coalesce(a.started_at, a.claimed_at) AS since
         FROM jobs j JOIN attempts a ON a.job_id = j.id AND a.fence = @fence
         WHERE j.id = @jobId`,
      ),
      // An unmeasured attempt's record shows the CPU it was charged, so the attempts and the usage agree.
      wall: db.prepare(`UPDATE attempts SET wall_seconds = @wall, cpu_seconds = coalesce(cpu_seconds, @cpu) WHERE job_id = @jobId AND n = @n`),
      addAttempt: db.prepare(
        `INSERT INTO usage_daily (tenant, day, attempts, cpu_seconds, wall_seconds, gb_seconds, peak_memory_bytes)
         VALUES (@tenant, @day, 1, @cpu, @wall, @gb, @peak)
         ON CONFLICT (tenant, day) DO UPDATE SET attempts = attempts + 1, cpu_seconds = cpu_seconds + excluded.cpu_seconds,
           wall_seconds = wall_seconds + excluded.wall_seconds, gb_seconds = gb_seconds + excluded.gb_seconds,
           peak_memory_bytes = max(peak_memory_bytes, excluded.peak_memory_bytes)`,
      ),
      reason: db.prepare(`SELECT reason FROM jobs WHERE id = ?`).pluck(),
      addJob: db.prepare(
        `INSERT INTO usage_daily (tenant, day, jobs, failures)
         VALUES (@tenant, @day, 1, CASE WHEN @reason IS NULL THEN '{}' ELSE json_object(@reason, 1) END)
         ON CONFLICT (tenant, day) DO UPDATE SET jobs = jobs + 1,
           failures = CASE WHEN @reason IS NULL THEN failures
             ELSE json_set(failures, '$."' || @reason || '"', coalesce(json_extract(failures, '$."' || @reason || '"'), 0) + 1) END`,
      ),
      addHour: db.prepare(
        `INSERT INTO usage_hourly (tenant, hour, jobs, failures) VALUES (@tenant, @hour, 1, @failed)
         ON CONFLICT (tenant, hour) DO UPDATE SET jobs = jobs + 1, failures = failures + excluded.failures`,
      ),
    };
    machine.onAttemptEnd((e) => this.attemptEnded(e));
    machine.onJobEnd((e) => this.jobEnded(e));
  }

  private attemptEnded(e: AttemptEnd): void {
    const a = this.q.attempt.get({ jobId: e.jobId, fence: e.fence }) as
      | { memory: number | null; cpu: number | null; cpuset: string | null; n: number; since: number }
      | undefined;
    if (!a) return;
    // The agent's own measure of the run; an attempt it never reported on (lease expired, job
    // deleted while running) ran from its start until the gateway gave up on it.
    const wall = e.result.wallMs !== undefined ? e.result.wallMs / 1000 : Math.max(0, e.now - a.since) / 1000;
    // An attempt the agent never measured (deleted while running, or its lease ran out: the agent
    // went silent, or the gateway was down) is charged what it could have used — its CPU limit ×
    // the time it ran — or going silent would dodge the budget.
    const cpu = e.result.cpuSeconds ?? cpuLimitOf(a.cpu, a.cpuset) * wall;
    this.q.wall.run({ jobId: e.jobId, n: a.n, wall, cpu });
    this.q.addAttempt.run({
      tenant: e.tenant,
      day: utcDay(e.now),
      cpu,
      wall,
      gb: ((a.memory ?? 0) / GB) * wall,
      peak: e.result.peakMemoryBytes ?? 0,
    });
  }

  private jobEnded(e: JobEnd): void {
    const reason = e.state === 'succeeded' ? null : ((this.q.reason.get(e.jobId) as string | null | undefined) ?? e.state);
    this.q.addJob.run({ tenant: e.tenant, day: utcDay(e.now), reason });
    this.q.addHour.run({ tenant: e.tenant, hour: utcHour(e.now), failed: reason === null ? 0 : 1 });
  }
}
