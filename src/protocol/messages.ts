import { z } from 'zod';

/**
 * The gateway↔agent wire protocol: one zod discriminated union per direction, imported by both
 * the gateway (`src/agents/`) and the agent (`agent/`). Every frame is JSON text and is parsed
 * against these schemas on arrival; anything else is logged and dropped.
 */
export const PROTOCOL_VERSION = 1;
/**
 * Largest frame either side accepts (ws `maxPayload`; a bigger one closes the whole link).
 * Output chunks are cut well below it. The largest frame the gateway sends is a `run` of a job
 * at every input limit: JSON escapes a control character in six bytes, so a 256 KiB stdin plus
 * 64 KiB each of command and env measure 2.36 MB encoded (WORST_RUN_FRAME_BYTES in
 * src/jobs/spec.ts); 4 MiB leaves room above that. ws allocates per frame received, not up to
 * the limit, so a higher limit costs nothing on ordinary frames.
 */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;
export const MAX_OUTPUT_CHUNK_BYTES = 64 * 1024;
export const AGENT_PATH = '/v1/agents/connect';

const JobId = z.string().regex(/^job_[0-9A-Z]{26}$/);
const Fence = z.number().int().nonnegative();
const Name = z.string().min(1).max(128);

export const WarmSchema = z.object({ tenant: Name, image: Name, idle: z.number().int().nonnegative() });

export const PoolSchema = z.object({
  containers: z.number().int().nonnegative(),
  blank: z.record(Name, z.number().int().nonnegative()),
  warm: z.array(WarmSchema).max(10_000),
  busy: z.number().int().nonnegative(),
  recycled: z.number().int().nonnegative(),
});

export const ResultSchema = z.object({
  exitCode: z.number().int().nullable(),
  signal: z.string().max(16).nullable(),
  reason: z.enum(['exit', 'timeout', 'oom', 'cancelled', 'agent_error']),
  cpuSeconds: z.number().nonnegative().optional(),
  peakMemoryBytes: z.number().int().nonnegative().optional(),
  wallMs: z.number().nonnegative().optional(),
  detail: z.string().max(1024).optional(),
  /**
   * Whose fault an `agent_error` was: `job` when the job broke its own container (its executor
   * died or misbehaved) — charged to the job's retries; otherwise the platform's, retried free.
   */
  fault: z.enum(['job', 'platform']).optional(),
});

export const AgentMessage = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('hello'),
    version: z.number().int(),
    agent: Name,
    capacity: z.object({ cpus: z.number().positive(), memoryBytes: z.number().int().positive(), slots: z.number().int().min(0).max(4096) }),
    images: z.array(Name).max(1000),
    pool: PoolSchema,
    running: z.array(z.object({ jobId: JobId, fence: Fence })).max(4096),
  }),
  z.object({ type: z.literal('heartbeat'), images: z.array(Name).max(1000), pool: PoolSchema, running: z.array(z.object({ jobId: JobId, fence: Fence })).max(4096) }),
  z.object({ type: z.literal('started'), jobId: JobId, fence: Fence, container: Name }),
  /** The pool changed (a container went idle, blank or busy): sent between heartbeats, throttled. */
  z.object({ type: z.literal('pool'), pool: PoolSchema }),
  /**
   * The agent is shutting down: send it no more runs. It finishes (and reports) the attempts it
   * holds, then closes the link. A gateway that predates the frame drops it as malformed, which
   * costs only the runs it sends before the close.
   */
  z.object({ type: z.literal('draining') }),
  z.object({
    type: z.literal('output'),
    jobId: JobId,
    fence: Fence,
    stream: z.enum(['stdout', 'stderr']),
    /** base64 of the raw bytes. */
    data: z.string().max(Math.ceil((MAX_OUTPUT_CHUNK_BYTES * 4) / 3) + 4),
  }),
  z.object({
    type: z.literal('ended'),
    jobId: JobId,
    fence: Fence,
    result: ResultSchema,
    /** Set when the attempt ended before its `started` was sent: the container it ran in. */
    container: Name.optional(),
  }),
]);
export type AgentMessage = z.infer<typeof AgentMessage>;

export const RunSpecSchema = z.object({
  command: z.union([z.string(), z.array(z.string())]),
  image: Name,
  timeout: z.number().positive(),
  cpu: z.number().positive().optional(),
  cpuset: z.string().optional(),
  memory: z.number().int().positive().optional(),
  env: z.record(z.string(), z.string()),
  stdin: z.string().optional(),
  /** Binary-safe stdin, base64 (an invoke's raw body); used instead of `stdin` when present. */
  stdinBase64: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/).optional(),
  fresh: z.boolean(),
  network: z.boolean(),
  /** Bytes of output the gateway will keep; the agent stops sending past it. */
  maxOutputBytes: z.number().int().nonnegative().optional(),
});
export type RunSpec = z.infer<typeof RunSpecSchema>;

export const GatewayMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('welcome'), version: z.number().int(), agent: Name, heartbeatMs: z.number().int().positive() }),
  z.object({ type: z.literal('run'), jobId: JobId, fence: Fence, tenant: Name, attempt: z.number().int().positive(), spec: RunSpecSchema }),
  z.object({ type: z.literal('cancel'), jobId: JobId, fence: Fence }),
]);
export type GatewayMessage = z.infer<typeof GatewayMessage>;

/** Parses one frame; undefined (with the reason) when it is not a valid message. */
export function parseFrame<T extends z.ZodTypeAny>(schema: T, raw: unknown): { ok: true; msg: z.infer<T> } | { ok: false; error: string } {
  let value: unknown;
  try {
    value = JSON.parse(typeof raw === 'string' ? raw : Buffer.isBuffer(raw) ? raw.toString('utf8') : String(raw));
  } catch {
    return { ok: false, error: 'frame is not JSON' };
  }
  const r = schema.safeParse(value);
  return r.success ? { ok: true, msg: r.data } : { ok: false, error: r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') };
}
