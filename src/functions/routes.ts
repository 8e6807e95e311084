import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { requireScope } from '../auth/middleware.js';
import type { AppEnv } from '../http/env.js';
import { ApiError } from '../http/errors.js';
import { router, problems, bearer } from '../http/router.js';
import { MAX_INVOKE_STDIN_BYTES, MemorySchema, TimeoutSchema } from '../jobs/spec.js';
import { JobViewSchema, type JobView } from '../jobs/view.js';
import { FINAL_STATES } from '../queue/states.js';
import type { Services } from '../services.js';
import { FunctionNameSchema, FunctionRequestSchema, FunctionViewSchema } from './schema.js';
import { answerFromJob, JobWithOutputSchema } from './respond.js';

const MAX_WAIT_SECONDS = 60;
/** `CORRAL_QUERY` and `CORRAL_CONTENT_TYPE` together stay within the invocation env budget (MAX_INVOCATION_ENV_BYTES). */
const MAX_QUERY_BYTES = 4096;
const MAX_CONTENT_TYPE_BYTES = 1024;
/** Query parameters corral reads itself; the rest are the function's (`CORRAL_QUERY`). */
const OWN_PARAMS = new Set(['wait', 'timeout', 'memory']);

const NameParam = z.object({ name: FunctionNameSchema });
const json = <T extends z.ZodType>(schema: T) => ({ content: { 'application/json': { schema } }, required: true as const });
const ok = (schema: z.ZodType, description: string) => ({ description, content: { 'application/json': { schema } } });
const IdempotencyHeader = z.object({
  'idempotency-key': z
    .string()
    .min(1)
    .max(255, 'Idempotency-Key must be at most 255 characters')
    .regex(/^[\x21-\x7e]+$/, 'Idempotency-Key must be printable ASCII without spaces')
    .optional(),
});

const InvokeQuery = z.object({
  wait: z.coerce
    .number()
    .min(0, 'wait must be 0 to 60 seconds')
    .max(MAX_WAIT_SECONDS, 'wait must be 0 to 60 seconds')
    .optional()
    .openapi({ description: "Seconds to hold for the job to end (≤ 60): then the answer is the function's stdout.", example: 30 }),
  timeout: z.coerce.number().pipe(TimeoutSchema).optional().openapi({ type: 'number', description: "This call's timeout in seconds, at most the function's." }),
  memory: z
    .string()
    .max(32)
    .transform((v): string | number => v)
    .pipe(MemorySchema).optional().openapi({ type: 'string', description: "This call's memory limit, at most the function's.", example: '128M' }),
});

/**
 * The request's query string without corral's own parameters, as sent (still percent-encoded),
 * so the function parses it as any query string.
 */
function functionQuery(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return '';
  const end = url.indexOf('#', q);
  const kept = url
    .slice(q + 1, end < 0 ? undefined : end)
    .split('&')
    .filter((pair) => {
      if (pair === '') return false;
      const raw = pair.split('=', 1)[0]!;
      let key = raw;
      try {
        key = decodeURIComponent(raw.replace(/\+/g, ' '));
      } catch {
        /* not percent-encoding: not one of ours */
      }
      return !OWN_PARAMS.has(key);
    });
  const query = kept.join('&');
  if (Buffer.byteLength(query) > MAX_QUERY_BYTES) {
    throw new ApiError('bad_request', `the query string is longer than ${MAX_QUERY_BYTES} bytes`, [{ field: 'query', message: `at most ${MAX_QUERY_BYTES} bytes` }]);
  }
  return query;
}

/** A tenant's functions: save, list, read, delete, invoke. */
export function functionRoutes(s: Services) {
  const app = router();
  const read = requireScope(['functions:read'], { tenant: true });
  const write = requireScope(['functions:write'], { tenant: true });
  // Invoking runs a job: a token that may submit jobs may call functions too.
  const invoke = requireScope(['functions:write', 'jobs:write'], { tenant: true });

  app.openapi(
    createRoute({
      method: 'put',
      path: '/v1/functions/{name}',
      operationId: 'putFunction',
      tags: ['functions'],
      summary: 'Create or replace a function (its version grows on every change)',
      security: bearer,
      middleware: [write] as const,
      request: { params: NameParam, body: json(FunctionRequestSchema) },
      responses: {
        200: ok(FunctionViewSchema, 'Replaced (or unchanged: same version)'),
        201: ok(FunctionViewSchema, 'Created, version 1'),
        ...problems(400, 401, 403, 413, 415, 422),
      },
    }),
    async (c) => {
      const { fn, created } = await s.functions.put(c.get('principal').tenant!, c.req.valid('param').name, c.req.valid('json'));
      return c.json(fn, created ? 201 : 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/functions',
      operationId: 'listFunctions',
      tags: ['functions'],
      summary: 'List functions by name',
      security: bearer,
      middleware: [read] as const,
      request: {
        query: z.object({
          limit: z.coerce.number().int().min(1).max(200).default(50),
          cursor: FunctionNameSchema.optional().openapi({ description: 'nextCursor of the previous page' }),
        }),
      },
      responses: {
        200: ok(z.object({ functions: z.array(FunctionViewSchema), nextCursor: z.string().nullable() }), 'A page of functions'),
        ...problems(400, 401, 403),
      },
    }),
    (c) => {
      const q = c.req.valid('query');
      return c.json(s.functions.list(c.get('principal').tenant!, { limit: q.limit, ...(q.cursor !== undefined && { cursor: q.cursor }) }), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/functions/{name}',
      operationId: 'getFunction',
      tags: ['functions'],
      summary: 'Get a function',
      security: bearer,
      middleware: [read] as const,
      request: { params: NameParam },
      responses: { 200: ok(FunctionViewSchema, 'The function'), ...problems(400, 401, 403, 404) },
    }),
    (c) => c.json(s.functions.get(c.get('principal').tenant!, c.req.valid('param').name), 200),
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/v1/functions/{name}',
      operationId: 'deleteFunction',
      tags: ['functions'],
      summary: 'Delete a function and its triggers (its jobs stay)',
      security: bearer,
      middleware: [write] as const,
      request: { params: NameParam },
      responses: { 204: { description: 'Deleted' }, ...problems(400, 401, 403, 404) },
    }),
    async (c) => {
      await s.functions.remove(c.get('principal').tenant!, c.req.valid('param').name);
      return c.body(null, 204);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/functions/{name}/invoke',
      operationId: 'invokeFunction',
      tags: ['functions'],
      summary: "Invoke a function: the raw body is its stdin; with ?wait=N the answer is its stdout",
      description:
        'Asynchronous by default (202 with the job). With `wait`, a job that ends in time answers 200 with its stdout as the body ' +
        "(the function's contentType) and `Corral-Job-Id`, `Corral-State`, `Corral-Exit-Code` headers, or 502 problem+json with the " +
        'state, exit code and the tail of stderr when it did not succeed; with `Accept: application/json`, 200 with the job and its ' +
        'output inline whatever its end. Still running when the wait ends: 202 with `Location: /v1/jobs/:id`.',
      security: bearer,
      middleware: [invoke] as const,
      request: {
        params: NameParam,
        query: InvokeQuery,
        headers: IdempotencyHeader,
        body: { content: { '*/*': { schema: z.string().openapi({ format: 'binary' }) } }, required: false },
      },
      responses: {
        200: {
          description: "The job ended within the wait: the function's stdout, or (Accept: application/json) the job with its output",
          content: { '*/*': { schema: z.string().openapi({ format: 'binary' }) }, 'application/json': { schema: JobWithOutputSchema } },
        },
        202: ok(JobViewSchema, 'Queued (on disk), or still running at the end of the wait; Location names the job'),
        // 502's problem also carries jobId, state, exitCode, signal, reason and the tail of stderr.
        ...problems(400, 401, 403, 404, 409, 413, 422, 429, 502, 507),
      },
    }),
    async (c) => {
      const tenant = c.get('principal').tenant!;
      const { name } = c.req.valid('param');
      const q = c.req.valid('query');
      const key = c.req.valid('header')['idempotency-key'];
      const contentType = c.req.header('content-type') ?? '';
      if (Buffer.byteLength(contentType) > MAX_CONTENT_TYPE_BYTES || contentType.includes('\0')) {
        throw new ApiError('bad_request', `the content type must be at most ${MAX_CONTENT_TYPE_BYTES} bytes`, [{ field: 'content-type', message: 'too long' }]);
      }
      const query = functionQuery(c.req.url);
      const stdin = Buffer.from(await c.req.arrayBuffer());
      if (stdin.length > MAX_INVOKE_STDIN_BYTES) {
        throw new ApiError('payload_too_large', `an invoke's body is at most ${MAX_INVOKE_STDIN_BYTES} bytes`, [{ field: '(body)', message: 'too large' }]);
      }
      const wait = q.wait ?? 0;
      const { job, fn } = await s.functions.invoke(
        tenant,
        name,
        { stdin, contentType, query, ...(q.timeout !== undefined && { timeout: q.timeout }), ...(q.memory !== undefined && { memory: q.memory }) },
        { ...(key !== undefined && { idempotencyKey: key }), hold: (j) => waitFor(c, tenant, j, wait) },
      );
      if (wait <= 0 || !FINAL_STATES.has(job.state)) {
        return c.json(job, 202, { location: `/v1/jobs/${job.id}`, 'corral-job-id': job.id, 'corral-state': job.state });
      }
      return answerFromJob(c, s, job, fn.contentType, /\bapplication\/json\b/i.test(c.req.header('accept') ?? ''));
    },
  );

  /** Holds until the job ends or `seconds` pass; returns the job as it then is. */
  async function waitFor(c: Context<AppEnv>, tenant: string, job: JobView, seconds: number): Promise<JobView> {
    if (seconds > 0 && !FINAL_STATES.has(job.state)) {
      await s.waiters.wait(tenant, job.id, seconds * 1000, c.req.raw.signal);
      job = s.jobs.get(tenant, job.id);
    }
    // The read may have seen an end committed but not yet fsynced: a 200/502 reports it only once on disk.
    if (FINAL_STATES.has(job.state)) await s.store.durable();
    return job;
  }

  return app;
}
