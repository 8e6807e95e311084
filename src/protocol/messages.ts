import { z } from 'zod';

/**
 * The gateway↔agent wire protocol: one zod discriminated union per direction, imported by both
 * the gateway (`src/agents/`) and the agent (`agent/`). Every frame is JSON text and is parsed
 * against these schemas on arrival; anything else is logged and dropped.
 *
 * The lifecycle of a link:
 * - The agent dials with a bearer token of scope `agent` whose `sub` is `agent:NAME` (see
 *   `agentNameOf`); its `hello` must name NAME. Refusals close the link with a code of
 *   `CLOSE` and a reason: another name (`nameRefused`) and another protocol version
 *   (`protocol`) are final — the agent stops with that error instead of dialling again; a name
 *   already connected (`nameInUse`) is refused, never taken over, and the agent dials again after
 *   its longest backoff (a half-open old link is dropped by the liveness check within a lease).
 * - Liveness: each side sends a WebSocket ping every `heartbeatMs` and drops a link on which it
 *   has heard nothing (no frame, ping or pong) for a lease (`welcome.leaseMs`); the agent then
 *   dials again and reports what it still runs, and the gateway lets that agent's attempts run
 *   out their leases and re-runs them.
 * - Fencing: every frame about an attempt carries its (jobId, fence). The gateway acts on one
 *   only when the attempt is current and held by the sending agent; anything else changes
 *   nothing (a late result, output of a superseded attempt, another agent's job) and an attempt
 *   the sender reports running but does not hold is answered with a `cancel`.
 * - Cancels: the gateway sends `cancel` when a running job is cancelled or deleted, and again on
 *   every `hello` and `heartbeat` that still reports the attempt, until the agent sends its
 *   `ended` or stops reporting it: a cancel issued while the agent was away is not lost.
 * - Every `run` is answered with `ended`: an agent that cannot start it (no free slot, an image
 *   it lacks, a duplicate, a container that failed before the job began) says so at once with
 *   `reason: 'agent_error'` (the platform's fault: re-queued without using the job's retries)
 *   instead of leaving the gateway to wait for a lease. A `run` for a job the agent still runs
 *   under an older fence supersedes it: the old attempt is stopped and the new one runs.
 * - Results are kept until acknowledged: the gateway answers each `ended` with `ack` once what
 *   it did with it (recorded, or rejected as stale) is on disk. The agent keeps every `ended`
 *   not yet acknowledged, sends them all again after each `welcome`, and again every other
 *   heartbeat while the link stays up, so a result in flight when the gateway dies, or one the
 *   gateway could not write (a full disk), is not lost and its job not run twice. A result sent
 *   twice changes nothing the second time (its attempt is no longer current). An attempt's output
 *   is kept with its result and sent again with it, each chunk with its `offset`: the gateway
 *   stores only the bytes it did not have, so output in flight when the gateway died is kept too.
 *   Past what the agent keeps (2 MiB per attempt) chunks are sent once, after the kept ones; the
 *   result says how many bytes were sent (`outputBytes`), and a job whose stored output falls
 *   short of it is marked truncated rather than silently missing bytes.
 */
/**
 * 2: names bound to tokens, duplicates refused, pings, cancels re-sent, every run answered (an
 * agent of version 1 drops a re-dispatch and leaves runs it cannot start to their lease, so the
 * gateway refuses it with `CLOSE.protocol` rather than run a mixed cluster).
 */
export const PROTOCOL_VERSION = 2;

/** Close codes of the agent link (4000–4999 are the application's). */
export const CLOSE = {
  /** The first frame was not a `hello`, or none came in time. */
  helloExpected: 4000,
  /** The agent speaks another protocol version: final. */
  protocol: 4001,
  /** The token does not allow the name the `hello` gave: final. */
  nameRefused: 4003,
  /** An agent of that name is connected: try again later (the link may be half-open). */
  nameInUse: 4004,
} as const;

/**
 * The agent name an agent token allows: its subject is `agent:NAME`. Undefined for any other
 * subject, which then connects as no agent at all (`corral token --scope agent --name NAME` mints
 * one; `corral up` mints its local agent's).
 */
export function agentNameOf(sub: string): string | undefined {
  return sub.startsWith('agent:') && sub.length > 'agent:'.length ? sub.slice('agent:'.length) : undefined;
}
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
    /**
     * Set on a chunk sent again after a reconnect: the bytes of the attempt's output (both
     * streams) sent before it. The gateway stores only the part it does not have yet.
     */
    offset: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(),
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
    /**
     * Bytes of output the agent sent for the attempt (both streams). The gateway marks the job's
     * output truncated when it stored fewer: chunks past what the agent keeps for a resend that
     * a link or a gateway lost.
     */
    outputBytes: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER).optional(),
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
  z.object({
    type: z.literal('welcome'),
    version: z.number().int(),
    agent: Name,
    heartbeatMs: z.number().int().positive(),
    /** The attempt lease: the agent drops a link it has heard nothing on for this long (3 × heartbeatMs when absent). */
    leaseMs: z.number().int().positive().optional(),
  }),
  z.object({ type: z.literal('run'), jobId: JobId, fence: Fence, tenant: Name, attempt: z.number().int().positive(), spec: RunSpecSchema }),
  /** Stop attempt (jobId, fence); sent again with every hello and heartbeat that still reports it. */
  z.object({ type: z.literal('cancel'), jobId: JobId, fence: Fence }),
  /** The `ended` of attempt (jobId, fence) is on disk, recorded or rejected as stale: the agent may forget it. */
  z.object({ type: z.literal('ack'), jobId: JobId, fence: Fence }),
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
