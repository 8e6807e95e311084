import { z } from '@hono/zod-openapi';
import { parseMemory } from './size.js';

export { parseMemory };

/** Characters a job's text fields may never hold: NUL breaks argv and C strings inside the container. */
const NO_NUL = /^[^\0]*$/;
const MAX_COMMAND_BYTES = 64 * 1024;
const MAX_ARGV = 1024;
const MAX_ENV_ENTRIES = 128;
const MAX_ENV_BYTES = 64 * 1024;
export const MAX_STDIN_BYTES = 256 * 1024;
export const MAX_NAME_LENGTH = 200;
const MAX_TIMEOUT_SECONDS = 7 * 24 * 3600;
export const JOB_ID = /^job_[0-9A-HJKMNP-TV-Z]{26}$/;

export const MIN_MEMORY_BYTES = 8 * 1024 ** 2;
const MAX_MEMORY_BYTES = 1024 ** 4;

const utf8Bytes = (s: string) => Buffer.byteLength(s, 'utf8');

export const CommandSchema = z
  .union([
    z
      .string()
      .min(1, 'command must not be empty')
      .regex(NO_NUL, 'command must not contain NUL')
      .refine((s) => s.trim().length > 0, 'command must not be blank')
      .refine((s) => utf8Bytes(s) <= MAX_COMMAND_BYTES, `command must be at most ${MAX_COMMAND_BYTES} bytes`),
    z
      .array(z.string().regex(NO_NUL, 'argv entries must not contain NUL'))
      .min(1, 'argv must have at least one entry')
      .max(MAX_ARGV, `argv may have at most ${MAX_ARGV} entries`)
      .refine((a) => (a[0] ?? '').length > 0, 'argv[0] must not be empty')
      .refine(
        (a) => a.reduce((n, s) => n + utf8Bytes(s) + 1, 0) <= MAX_COMMAND_BYTES,
        `argv must be at most ${MAX_COMMAND_BYTES} bytes in all`,
      ),
  ])
  .openapi({
    description: 'A line run by `/bin/sh -c` inside the container, or an argv array executed directly.',
    example: 'echo hello from $(hostname)',
  });

export const JobNameSchema = z
  .string()
  .min(1, 'name must not be empty')
  .max(MAX_NAME_LENGTH, `name must be at most ${MAX_NAME_LENGTH} characters`)
  .refine((s) => !s.includes('/'), 'name must not contain "/"')
  // Control characters (NUL, newlines, escapes) make names unprintable and unsafe in logs.
  .refine((s) => !/\p{Cc}/u.test(s), 'name must not contain control characters')
  .refine((s) => s.trim() === s, 'name must not start or end with whitespace')
  .refine((s) => !JOB_ID.test(s), 'name must not look like a job id')
  .openapi({ example: 'nightly-report' });

export const EnvSchema = z
  .record(
    z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,255}$/, 'env names are letters, digits and _, not starting with a digit'),
    z.string().regex(NO_NUL, 'env values must not contain NUL'),
  )
  .refine((e) => Object.keys(e).length <= MAX_ENV_ENTRIES, `env may have at most ${MAX_ENV_ENTRIES} entries`)
  .refine(
    (e) => Object.entries(e).reduce((n, [k, v]) => n + utf8Bytes(k) + utf8Bytes(v) + 2, 0) <= MAX_ENV_BYTES,
    `env must be at most ${MAX_ENV_BYTES} bytes in all`,
  );

export const MemorySchema = z
  .union([z.number().int(), z.string().max(32)])
  .transform((v, ctx) => {
    const bytes = parseMemory(v);
    if (bytes === undefined) {
      ctx.addIssue({ code: 'custom', message: 'memory must be bytes or a size such as "256M"' });
      return z.NEVER;
    }
    if (bytes < MIN_MEMORY_BYTES || bytes > MAX_MEMORY_BYTES) {
      ctx.addIssue({ code: 'custom', message: `memory must be between 8M and 1T` });
      return z.NEVER;
    }
    return bytes;
  })
  .openapi({ type: 'string', example: '256M', description: 'Bytes, or a size with K/M/G/T suffix.' });

/** The highest CPU number a cpuset may name: far above any machine, low enough to bound the set. */
const MAX_CPU_INDEX = 4095;

/**
 * A cpuset such as "0-1,4" → its CPU numbers, ascending; or the reason it is not one. Strict, as
 * the kernel is: each range runs low to high ("5-1" is an error, not an empty set) and no CPU is
 * named twice (a tenant could otherwise make "0,0,0" count as one CPU against maxCpu while asking
 * for more in another spelling).
 */
export function parseCpuset(text: string): { cpus: number[] } | { error: string } {
  if (!/^\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*$/.test(text)) return { error: 'cpuset must look like "0-1" or "0,2"' };
  const seen = new Set<number>();
  for (const part of text.split(',')) {
    const [a, b = a] = part.split('-').map(Number) as [number, number?];
    if (a > b!) return { error: `cpuset range "${part}" runs backwards; write it low-high` };
    if (b! > MAX_CPU_INDEX) return { error: `cpuset names CPU ${b}; the highest allowed is ${MAX_CPU_INDEX}` };
    for (let c = a; c <= b!; c++) {
      if (seen.has(c)) return { error: `cpuset names CPU ${c} more than once` };
      seen.add(c);
    }
  }
  return { cpus: [...seen].sort((x, y) => x - y) };
}

export const CpusetSchema = z
  .string()
  .max(64)
  .superRefine((s, ctx) => {
    const r = parseCpuset(s);
    if ('error' in r) ctx.addIssue({ code: 'custom', message: r.error });
  })
  .openapi({ example: '0-1' });

/**
 * Largest raw body `POST /v1/functions/:name/invoke` turns into stdin, whatever the gateway's
 * body limit: it travels base64 in the run frame (4/3 of it, no JSON escapes), and that must
 * stay within the frame budget below.
 */
export const MAX_INVOKE_STDIN_BYTES = 1024 * 1024;
/**
 * Bytes (names and values) of the env an invocation adds to its function's env: `CORRAL_QUERY`,
 * `CORRAL_CONTENT_TYPE`, and a trigger's `CORRAL_EVENT` / `CORRAL_DELIVERY_ID`. Whoever adds
 * them keeps within this budget, so the worst run frame below stays true.
 */
export const MAX_INVOCATION_ENV_BYTES = 8 * 1024;

/**
 * The largest `run` frame an admitted job can produce, in bytes. JSON escapes a control
 * character as \u00XX, six bytes for one, so every text field may grow sixfold (stdin, command
 * or argv, env values; env names are plain ASCII); an invoke's binary stdin is base64, which JSON
 * never escapes, so 1 MiB of it is 1 398 104 bytes — less than 256 KiB of JSON stdin at six bytes
 * a character (1 572 864). The fixed fields (ids, image, cpuset, numbers, keys) fit easily in the
 * 16 KiB allowance. Measured on the worst case: stdin 1 572 866 + command 393 218 + env 393 206
 * bytes → a 2 359 750-byte frame (test/hostile/gateway-input.test.ts builds it); an invoke at
 * every limit measures 2 189 945 bytes (test/functions-frames.test.ts). The protocol's MAX_FRAME_BYTES must
 * stay well above this; a test checks it does.
 */
export const WORST_RUN_FRAME_BYTES =
  Math.max(6 * MAX_STDIN_BYTES, 4 * Math.ceil(MAX_INVOKE_STDIN_BYTES / 3)) + 6 * (MAX_COMMAND_BYTES + MAX_ENV_BYTES + MAX_INVOCATION_ENV_BYTES) + 16 * 1024;

export const ImageSchema = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'image must be a lowercase name such as "busybox"');
export const TimeoutSchema = z
  .number()
  .positive('timeout must be positive')
  .max(MAX_TIMEOUT_SECONDS, `timeout must be at most ${MAX_TIMEOUT_SECONDS} seconds`)
  .openapi({ description: 'Seconds of wall time per attempt.', example: 30 });
export const RetriesSchema = z.number().int('retries must be an integer').min(0).max(10);
/** The smallest CPU share a cgroup enforces here (1 ms of every 100 ms period): a smaller one would run at this and be metered below it. */
export const MIN_CPU = 0.01;
export const CpuSchema = z.number().min(MIN_CPU, `cpu must be at least ${MIN_CPU}`).max(1024).openapi({ example: 0.5 });
export const CallbackUrlSchema = z
  .string()
  .max(2048)
  .url()
  .refine((u) => /^https?:\/\//i.test(u), 'callbackUrl must be http or https');

/** The body of `POST /v1/jobs`. */
export const JobRequestSchema = z
  .object({
    command: CommandSchema,
    image: ImageSchema.optional(),
    timeout: TimeoutSchema.optional(),
    retries: RetriesSchema.optional(),
    cpu: CpuSchema.optional(),
    cpuset: CpusetSchema.optional(),
    memory: MemorySchema.optional(),
    env: EnvSchema.optional(),
    stdin: z
      .string()
      .refine((s) => utf8Bytes(s) <= MAX_STDIN_BYTES, `stdin must be at most ${MAX_STDIN_BYTES} bytes`)
      .optional(),
    name: JobNameSchema.optional(),
    fresh: z.boolean().optional(),
    network: z.boolean().optional().openapi({ description: 'Ask for a network interface (policy may refuse).' }),
    callbackUrl: CallbackUrlSchema.optional(),
  })
  .strict()
  .refine((b) => b.cpu === undefined || b.cpuset === undefined, {
    message: 'give cpu or cpuset, not both',
    path: ['cpuset'],
  })
  .openapi('JobRequest');

export type JobRequest = z.infer<typeof JobRequestSchema>;

/** A job's request with defaults filled in: what is stored and what the agent receives. */
export interface JobSpec {
  command: string | string[];
  image: string;
  timeout: number;
  retries: number;
  cpu?: number;
  cpuset?: string;
  memory?: number;
  env: Record<string, string>;
  stdin?: string;
  /** Binary-safe stdin (an invoke's raw body), base64; a job has this or `stdin`, never both. */
  stdinBase64?: string;
  fresh: boolean;
  network: boolean;
  callbackUrl?: string;
  /** The tenant's output cap when the job was submitted. */
  maxOutputBytes: number;
}

export const DEFAULT_TIMEOUT_SECONDS = 60;

/** Fills a request's unset fields; the timeout defaults to a minute or the tenant's maximum if lower. */
export function toSpec(req: JobRequest, d: { image: string; maxTimeoutSeconds: number; maxOutputBytes: number }): JobSpec {
  return {
    maxOutputBytes: d.maxOutputBytes,
    command: req.command,
    image: req.image ?? d.image,
    timeout: req.timeout ?? Math.min(DEFAULT_TIMEOUT_SECONDS, d.maxTimeoutSeconds),
    retries: req.retries ?? 0,
    ...(req.cpu !== undefined && { cpu: req.cpu }),
    ...(req.cpuset !== undefined && { cpuset: req.cpuset }),
    ...(req.memory !== undefined && { memory: req.memory }),
    env: req.env ?? {},
    ...(req.stdin !== undefined && { stdin: req.stdin }),
    fresh: req.fresh ?? false,
    network: req.network ?? false,
    ...(req.callbackUrl !== undefined && { callbackUrl: req.callbackUrl }),
  };
}
