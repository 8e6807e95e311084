import { z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { AppEnv } from '../http/env.js';
import { problem } from '../http/errors.js';
import { JobViewSchema, type JobView } from '../jobs/view.js';
import type { Services } from '../services.js';

/** Bytes of stderr a failed synchronous invoke's problem carries: its end, where the error usually is. */
export const STDERR_TAIL_BYTES = 4096;
/** Bytes of each stream inlined in the JSON answer; the rest is at GET /v1/jobs/:id/output. */
export const MAX_INLINE_OUTPUT_BYTES = 1024 * 1024;

export const JobWithOutputSchema = JobViewSchema.extend({
  stdout: z.string(),
  stderr: z.string(),
  /** More output than was inlined: read all of it at GET /v1/jobs/:id/output. */
  stdoutTruncated: z.boolean(),
  stderrTruncated: z.boolean(),
}).openapi('JobWithOutput');

/** The last attempt's bytes of one stream (none when the job never ran). */
function streamOf(s: Services, job: JobView, stream: 'stdout' | 'stderr'): Buffer {
  const n = job.attempts.length;
  return n === 0 ? Buffer.alloc(0) : Buffer.concat(s.output.read(job.id, n, stream).map((ch) => ch.data));
}

/**
 * The answer to a synchronous invoke whose job ended: its stdout as the body, a 502 problem when
 * it did not succeed, or (asked for JSON) the job with its output inline.
 */
export function answerFromJob(c: Context<AppEnv>, s: Services, job: JobView, contentType: string, asJson: boolean) {
  const headers: Record<string, string> = {
    'corral-job-id': job.id,
    'corral-state': job.state,
    ...(job.exitCode !== null && { 'corral-exit-code': String(job.exitCode) }),
  };
  if (asJson) {
    const out = streamOf(s, job, 'stdout');
    const err = streamOf(s, job, 'stderr');
    const body = {
      ...job,
      stdout: out.subarray(0, MAX_INLINE_OUTPUT_BYTES).toString('utf8'),
      stderr: err.subarray(0, MAX_INLINE_OUTPUT_BYTES).toString('utf8'),
      stdoutTruncated: out.length > MAX_INLINE_OUTPUT_BYTES || job.outputTruncated,
      stderrTruncated: err.length > MAX_INLINE_OUTPUT_BYTES || job.outputTruncated,
    };
    return c.json(body, 200, headers);
  }
  if (job.state !== 'succeeded') {
    const err = streamOf(s, job, 'stderr');
    const how = job.exitCode !== null ? ` with exit code ${job.exitCode}` : job.signal ? ` by ${job.signal}` : '';
    return problem(c, 'function_failed', `the function's job ${job.id} ended ${job.state}${how}${job.reason ? ` (${job.reason})` : ''}${job.detail ? `: ${job.detail}` : ''}`, [], headers, {
      jobId: job.id,
      state: job.state,
      exitCode: job.exitCode,
      signal: job.signal,
      reason: job.reason,
      stderr: err.subarray(Math.max(0, err.length - STDERR_TAIL_BYTES)).toString('utf8'),
      stderrTruncated: err.length > STDERR_TAIL_BYTES,
    });
  }
  return c.body(new Uint8Array(streamOf(s, job, 'stdout')), 200, { ...headers, 'content-type': contentType, 'x-corral-output-truncated': String(job.outputTruncated) });
}
