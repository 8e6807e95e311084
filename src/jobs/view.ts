import { z } from '@hono/zod-openapi';
import { JOB_REASONS, JOB_STATES, REASONS } from '../queue/states.js';
import type { JobSpec } from './spec.js';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export const AttemptViewSchema = z
  .object({
    n: z.number().int(),
    agent: z.string(),
    container: z.string().nullable(),
    startedAt: z.string().nullable(),
    endedAt: z.string().nullable(),
    exitCode: z.number().int().nullable(),
    signal: z.string().nullable(),
    reason: z.enum(REASONS).nullable(),
    cpuSeconds: z.number().nullable(),
    peakMemoryBytes: z.number().int().nullable(),
  })
  .openapi('Attempt');

export const JobViewSchema = z
  .object({
    id: z.string(),
    name: z.string().nullable(),
    tenant: z.string(),
    /** The function the job was invoked from, and its version then; null for an ad-hoc job. */
    function: z.string().nullable(),
    functionVersion: z.number().int().nullable(),
    state: z.enum(JOB_STATES),
    exitCode: z.number().int().nullable(),
    signal: z.string().nullable(),
    reason: z.enum(JOB_REASONS).nullable(),
    /** Set when the gateway ended the job without running it (`rejected`, `unplaceable`): why. */
    detail: z.string().nullable(),
    command: z.union([z.string(), z.array(z.string())]),
    image: z.string(),
    timeout: z.number(),
    retries: z.number().int(),
    cpu: z.number().optional(),
    cpuset: z.string().optional(),
    memory: z.number().int().optional(),
    env: z.record(z.string(), z.string()),
    stdin: z.string().optional(),
    stdinBytes: z.number().int().openapi({ description: 'Size of the stdin the job was given (kept for a re-run; the bytes are not shown)' }),
    fresh: z.boolean(),
    network: z.boolean(),
    callbackUrl: z.string().optional(),
    attempts: z.array(AttemptViewSchema),
    createdAt: z.string(),
    startedAt: z.string().nullable(),
    endedAt: z.string().nullable(),
    outputBytes: z.number().int(),
    outputTruncated: z.boolean(),
    /** A queued job's 1-based place among its tenant's queued jobs, in the order the scheduler takes them. */
    queuePosition: z.number().int().optional(),
  })
  .openapi('Job');

export type JobView = z.infer<typeof JobViewSchema>;

export interface JobRow {
  id: string;
  name: string | null;
  tenant: string;
  function: string | null;
  functionVersion: number | null;
  state: string;
  spec: JobSpec;
  /** Bytes in the job's stdin column. */
  stdinBytes: number;
  exitCode: number | null;
  signal: string | null;
  reason: string | null;
  detail: string | null;
  createdAt: number;
  startedAt: number | null;
  endedAt: number | null;
  outputBytes: number;
  outputTruncated: boolean;
}

export interface AttemptRow {
  n: number;
  agent: string;
  container: string | null;
  startedAt: number | null;
  endedAt: number | null;
  exitCode: number | null;
  signal: string | null;
  reason: string | null;
  cpuSeconds: number | null;
  peakMemoryBytes: number | null;
}

/**
 * The public shape of a job. An invoke's binary stdin (up to 1 MiB as base64) is left out: it
 * would make every job listing carry it.
 */
export function toJobView(row: JobRow, attempts: AttemptRow[]): JobView {
  const { maxOutputBytes: _cap, stdinBase64, ...request } = row.spec;
  return {
    id: row.id,
    name: row.name,
    tenant: row.tenant,
    function: row.function,
    functionVersion: row.functionVersion,
    state: row.state as JobView['state'],
    exitCode: row.exitCode,
    signal: row.signal,
    reason: row.reason as JobView['reason'],
    detail: row.detail,
    ...request,
    // Rows from before stdin had its own column carry it in the spec.
    stdinBytes: row.stdinBytes || (stdinBase64 !== undefined ? Buffer.from(stdinBase64, 'base64').length : request.stdin !== undefined ? Buffer.byteLength(request.stdin) : 0),
    attempts: attempts.map((a) => ({
      n: a.n,
      agent: a.agent,
      container: a.container,
      startedAt: iso(a.startedAt),
      endedAt: iso(a.endedAt),
      exitCode: a.exitCode,
      signal: a.signal,
      reason: a.reason as JobView['attempts'][number]['reason'],
      cpuSeconds: a.cpuSeconds,
      peakMemoryBytes: a.peakMemoryBytes,
    })),
    createdAt: iso(row.createdAt)!,
    startedAt: iso(row.startedAt),
    endedAt: iso(row.endedAt),
    outputBytes: row.outputBytes,
    outputTruncated: row.outputTruncated,
  };
}
