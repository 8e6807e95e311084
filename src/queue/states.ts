export const JOB_STATES = ['queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];
export const FINAL_STATES: ReadonlySet<JobState> = new Set(['succeeded', 'failed', 'timed_out', 'cancelled']);

/** Why an attempt ended. */
export const REASONS = ['exit', 'timeout', 'oom', 'cancelled', 'agent_error'] as const;
export type Reason = (typeof REASONS)[number];

/** What an agent reports when an attempt ends. */
export interface AttemptResult {
  exitCode: number | null;
  signal: string | null;
  reason: Reason;
  cpuSeconds?: number;
  peakMemoryBytes?: number;
  detail?: string;
}
