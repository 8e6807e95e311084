import { z } from '@hono/zod-openapi';
import {
  CallbackUrlSchema,
  CommandSchema,
  CpuSchema,
  CpusetSchema,
  EnvSchema,
  ImageSchema,
  JobNameSchema,
  MemorySchema,
  RetriesSchema,
  TimeoutSchema,
} from '../jobs/spec.js';

export const DEFAULT_CONTENT_TYPE = 'text/plain; charset=utf-8';
/** A tenant may keep this many functions. */
export const MAX_FUNCTIONS_PER_TENANT = 1000;
const MAX_DESCRIPTION_LENGTH = 1024;

/** `type/subtype` with optional `; name=value` parameters: a header value, so no CR, LF or other control characters. */
const TOKEN = "[A-Za-z0-9!#$%&'*+.^_`|~-]+";
const MEDIA_TYPE = new RegExp(`^${TOKEN}/${TOKEN}(\\s*;\\s*${TOKEN}=(?:${TOKEN}|"[\\x20\\x21\\x23-\\x5b\\x5d-\\x7e]*"))*$`);

export const ContentTypeSchema = z
  .string()
  .max(255, 'contentType must be at most 255 characters')
  .regex(MEDIA_TYPE, 'contentType must be a media type such as "application/json" or "text/plain; charset=utf-8"')
  .openapi({ example: 'application/json' });

/** A function's name: the job-name rules (any Unicode letters, no "/", no control characters). */
export const FunctionNameSchema = JobNameSchema.openapi({ example: 'resize' });

/** Names corral sets in an invocation's env; a function may not set them itself. */
const RESERVED_ENV = /^CORRAL_/;

/**
 * The body of `PUT /v1/functions/:name`: the job fields a function fixes (the same schemas as
 * `POST /v1/jobs`), plus what is the function's own. Unset limits take the tenant's defaults when
 * invoked. Nullable fields accept null as "unset", so what `GET` answers can be sent back.
 */
export const FunctionRequestSchema = z
  .object({
    image: ImageSchema.optional(),
    command: CommandSchema,
    timeout: TimeoutSchema.nullable().optional(),
    retries: RetriesSchema.optional(),
    cpu: CpuSchema.nullable().optional(),
    cpuset: CpusetSchema.nullable().optional(),
    memory: MemorySchema.nullable().optional(),
    env: EnvSchema.refine((e) => !Object.keys(e).some((k) => RESERVED_ENV.test(k)), 'env names starting with CORRAL_ are set by corral').optional(),
    maxConcurrent: z
      .number()
      .int('maxConcurrent must be an integer')
      .min(1, 'maxConcurrent must be at least 1')
      .max(10_000, 'maxConcurrent must be at most 10000')
      .nullable()
      .optional()
      .openapi({ description: "Reserved concurrency: at most this many of the function's jobs run at once (≤ the tenant's maxConcurrent)." }),
    contentType: ContentTypeSchema.optional().openapi({ description: `Content type of a synchronous invoke's body (default "${DEFAULT_CONTENT_TYPE}").` }),
    description: z
      .string()
      .max(MAX_DESCRIPTION_LENGTH, `description must be at most ${MAX_DESCRIPTION_LENGTH} characters`)
      .refine((s) => !/[\0-\x08\x0b-\x1f\x7f]/.test(s), 'description must not contain control characters other than tab and newline')
      .nullable()
      .optional(),
    callbackUrl: CallbackUrlSchema.nullable().optional(),
  })
  .strict()
  .refine((b) => b.cpu == null || b.cpuset == null, { message: 'give cpu or cpuset, not both', path: ['cpuset'] })
  .openapi('FunctionRequest');

export type FunctionRequest = z.infer<typeof FunctionRequestSchema>;

export const FunctionViewSchema = z
  .object({
    name: z.string(),
    tenant: z.string(),
    version: z.number().int().openapi({ description: '1 when created, one more on every change.' }),
    image: z.string(),
    command: z.union([z.string(), z.array(z.string())]),
    timeout: z.number().nullable().openapi({ description: "Seconds per attempt; null: the job default (60 s, or the tenant's maximum if lower)." }),
    retries: z.number().int(),
    cpu: z.number().nullable(),
    cpuset: z.string().nullable(),
    memory: z.number().int().nullable(),
    env: z.record(z.string(), z.string()),
    maxConcurrent: z.number().int().nullable(),
    contentType: z.string(),
    description: z.string().nullable(),
    callbackUrl: z.string().nullable(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi('Function');

export type FunctionView = z.infer<typeof FunctionViewSchema>;
