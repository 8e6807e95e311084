export const JOB_STATES = ['queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];
export const FINAL_STATES: ReadonlySet<JobState> = new Set(['succeeded', 'failed', 'timed_out', 'cancelled']);

/** Why an attempt ended. */
export const REASONS = ['exit', 'timeout', 'oom', 'cancelled', 'agent_error'] as const;
export type Reason = (typeof REASONS)[number];

/**
 * Why a job ended: an attempt's reason, or one the gateway gives a job it ends without running:
 * `rejected` (its spec does not fit the agent protocol), `unplaceable` (no connected agent could
 * take it — its image, CPUs or memory — for the placement wait). Both come with a `detail`.
 */
export const JOB_REASONS = [...REASONS, 'rejected', 'unplaceable'] as const;
export type JobReason = (typeof JOB_REASONS)[number];

/** What an agent reports when an attempt ends. */
export interface AttemptResult {
  exitCode: number | null;
  signal: string | null;
  reason: Reason;
  cpuSeconds?: number;
  peakMemoryBytes?: number;
  /** Wall time of the attempt as the agent measured it. */
  wallMs?: number;
  detail?: string;
  /** `job` when an `agent_error` was the job's own doing (see ResultSchema): it uses up a retry. */
  fault?: 'job' | 'platform';
}
