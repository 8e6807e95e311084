import type { AttemptResult, JobState } from './states.js';

/** Platform losses (an agent vanished or broke) are retried this many times without using the job's retries. */
export const MAX_PLATFORM_FAILURES = 5;
export const MAX_BACKOFF_MS = 60_000;

export interface RetryInput {
  result: AttemptResult;
  cancelRequested: boolean;
  retries: number;
  failures: number;
  platformFailures: number;
}

export type RetryDecision =
  | { kind: 'final'; state: JobState; failures: number; platformFailures: number }
  | { kind: 'requeue'; delayMs: number; failures: number; platformFailures: number };

/**
 * The one place that decides what an ended attempt means for its job. Success is exit code 0;
 * a cancel wins over everything; platform failures retry without counting; anything else — an
 * agent_error the job caused included, so breaking its own container buys no free retries —
 * retries while retries remain, with exponential backoff.
 */
export function decideAfterAttempt(i: RetryInput, backoffBaseMs: number): RetryDecision {
  const { result } = i;
  if (i.cancelRequested || result.reason === 'cancelled') {
    return { kind: 'final', state: 'cancelled', failures: i.failures, platformFailures: i.platformFailures };
  }
  if (result.reason === 'exit' && result.exitCode === 0) {
    return { kind: 'final', state: 'succeeded', failures: i.failures, platformFailures: i.platformFailures };
  }
  if (result.reason === 'agent_error' && result.fault !== 'job') {
    const platformFailures = i.platformFailures + 1;
    if (platformFailures <= MAX_PLATFORM_FAILURES) {
      // The job did nothing wrong: run it again at once, elsewhere if need be.
      return { kind: 'requeue', delayMs: 0, failures: i.failures, platformFailures };
    }
    return { kind: 'final', state: 'failed', failures: i.failures, platformFailures };
  }
  const failures = i.failures + 1;
  if (failures <= i.retries) {
    return { kind: 'requeue', delayMs: backoff(backoffBaseMs, failures), failures, platformFailures: i.platformFailures };
  }
  return { kind: 'final', state: result.reason === 'timeout' ? 'timed_out' : 'failed', failures, platformFailures: i.platformFailures };
}

/** base, 2·base, 4·base … capped at a minute. */
export function backoff(baseMs: number, n: number): number {
  return Math.min(MAX_BACKOFF_MS, baseMs * 2 ** Math.max(0, n - 1));
}
