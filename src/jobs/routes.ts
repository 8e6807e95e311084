import { createRoute, z } from '@hono/zod-openapi';
import { streamSSE } from 'hono/streaming';
import { requireScope } from '../auth/middleware.js';
import { router, problems, bearer } from '../http/router.js';
import { JOB_STATES, FINAL_STATES } from '../queue/states.js';
import type { Services } from '../services.js';
import { JobNameSchema, JobRequestSchema, MAX_NAME_LENGTH } from './spec.js';
import { JobViewSchema, type JobView } from './view.js';
import { followOutput } from './follow.js';
import { QuotaExceeded } from '../errors/domain.js';

const MAX_WAIT_SECONDS = 60;
/** A follow refused for too many open holds may try again soon: holds end as jobs do. */
const HOLDS_RETRY_AFTER_SECONDS = 5;

const WaitQuery = z.object({
  wait: z.coerce
    .number()
    .min(0, 'wait must be 0 to 60 seconds')
    .max(MAX_WAIT_SECONDS, 'wait must be 0 to 60 seconds')
    .optional()
    .openapi({ description: 'Seconds to hold for the job to end (≤ 60).', example: 10 }),
});
const IdParam = z.object({ id: z.string().min(1).max(MAX_NAME_LENGTH * 4).openapi({ description: 'Job id or name' }) });
const IdempotencyHeader = z.object({
  'idempotency-key': z
    .string()
    .min(1)
    .max(255, 'Idempotency-Key must be at most 255 characters')
    .regex(/^[\x21-\x7e]+$/, 'Idempotency-Key must be printable ASCII without spaces')
    .optional(),
});

/** The body of a re-run: all optional; the job's name is not copied (names are unique). */
const RerunRequestSchema = z
  .object({ name: JobNameSchema.optional().openapi({ description: "The new job's name; none when left out" }) })
  .strict()
  .openapi('RerunRequest');

const jobResponse = (description: string) => ({ description, content: { 'application/json': { schema: JobViewSchema } } });

/** The tenant's job API. */
export function jobRoutes(s: Services) {
  const app = router();
  const read = requireScope(['jobs:read'], { tenant: true });
  const write = requireScope(['jobs:write'], { tenant: true });

  /** Holds until the job ends or `seconds` pass; returns the job as it then is, a final state only once on disk. */
  async function waitFor(tenant: string, job: JobView, seconds: number, signal: () => AbortSignal): Promise<JobView> {
    if (seconds <= 0 || FINAL_STATES.has(job.state)) return onDisk(job);
    await s.waiters.wait(tenant, job.id, seconds * 1000, signal());
    return onDisk(s.jobs.get(tenant, job.id));
  }

  /**
   * A read sees an end as soon as it is committed, before its fsync: an answer that reports a
   * final state leaves only once what it read is on disk (at once when nothing is pending).
   */
  async function onDisk<T extends { jobs: JobView[] } | JobView>(answer: T): Promise<T> {
    const views: JobView[] = 'jobs' in answer ? answer.jobs : [answer as JobView];
    if (views.some((j) => FINAL_STATES.has(j.state))) await s.store.durable();
    return answer;
  }

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/jobs',
      operationId: 'createJob',
      tags: ['jobs'],
      summary: 'Submit a job',
      security: bearer,
      middleware: [write] as const,
      request: {
        query: WaitQuery,
        headers: IdempotencyHeader,
        body: { content: { 'application/json': { schema: JobRequestSchema } }, required: true },
      },
      responses: {
        200: jobResponse('The job ended within the wait'),
        202: jobResponse('The job is queued (on disk) or still running'),
        ...problems(400, 401, 403, 409, 413, 415, 422, 429, 507),
      },
    }),
    async (c) => {
      const tenant = c.get('principal').tenant!;
      const key = c.req.valid('header')['idempotency-key'];
      const wait = c.req.valid('query').wait ?? 0;
      const { job } = await s.jobs.submit(tenant, c.req.valid('json'), {
        ...(key !== undefined && { idempotencyKey: key }),
        hold: (j) => waitFor(tenant, j, wait, () => c.req.raw.signal),
      });
      return c.json(job, FINAL_STATES.has(job.state) && wait > 0 ? 200 : 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/jobs',
      operationId: 'listJobs',
      tags: ['jobs'],
      summary: 'List jobs, newest first (in name order with namePrefix)',
      security: bearer,
      middleware: [read] as const,
      request: {
        query: z.object({
          state: z.enum(JOB_STATES).optional(),
          name: z.string().min(1).max(MAX_NAME_LENGTH).optional(),
          namePrefix: z
            .string()
            .min(1)
            .max(MAX_NAME_LENGTH)
            .optional()
            .openapi({
              description: 'Only jobs whose name starts with this, exactly (case-sensitive; `%`, `_` and `*` are plain characters). The jobs then come in name order (by code point), not newest first.',
              example: 'nightly-',
            }),
          function: z.string().min(1).max(MAX_NAME_LENGTH).optional().openapi({ description: 'Only jobs invoked from this function' }),
          limit: z.coerce.number().int().min(1).max(200).default(50),
          cursor: z.string().regex(/^job_[0-9A-Z]{26}$/, 'cursor must be a value returned as nextCursor').optional(),
        }),
      },
      responses: {
        200: {
          description: 'A page of jobs',
          content: { 'application/json': { schema: z.object({ jobs: z.array(JobViewSchema), nextCursor: z.string().nullable() }) } },
        },
        ...problems(400, 401, 403),
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      return c.json(
        await onDisk(s.jobs.list(c.get('principal').tenant!, {
          limit: q.limit,
          ...(q.state && { state: q.state }),
          ...(q.name !== undefined && { name: q.name }),
          ...(q.namePrefix !== undefined && { namePrefix: q.namePrefix }),
          ...(q.function !== undefined && { function: q.function }),
          ...(q.cursor && { cursor: q.cursor }),
        })),
        200,
      );
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/jobs/{id}',
      operationId: 'getJob',
      tags: ['jobs'],
      summary: 'Get a job by id or name',
      security: bearer,
      middleware: [read] as const,
      request: { params: IdParam, query: WaitQuery },
      responses: { 200: jobResponse('The job'), ...problems(400, 401, 403, 404) },
    }),
    async (c) => {
      const tenant = c.get('principal').tenant!;
      const job = s.jobs.getByIdOrName(tenant, c.req.valid('param').id);
      return c.json(await waitFor(tenant, job, c.req.valid('query').wait ?? 0, () => c.req.raw.signal), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/jobs/{id}/rerun',
      operationId: 'rerunJob',
      tags: ['jobs'],
      summary: 'Run a job again as a new job: the same request, stdin included, admitted like a new submit',
      security: bearer,
      middleware: [write] as const,
      request: {
        params: IdParam,
        query: WaitQuery,
        headers: IdempotencyHeader,
        body: { content: { 'application/json': { schema: RerunRequestSchema } }, required: false },
      },
      responses: {
        200: jobResponse('The new job ended within the wait'),
        202: jobResponse('The new job is queued (on disk) or still running'),
        ...problems(400, 401, 403, 404, 409, 413, 415, 422, 429),
      },
    }),
    async (c) => {
      const tenant = c.get('principal').tenant!;
      const key = c.req.valid('header')['idempotency-key'];
      const wait = c.req.valid('query').wait ?? 0;
      const { job } = await s.jobs.rerun(tenant, c.req.valid('param').id, c.req.valid('json'), {
        ...(key !== undefined && { idempotencyKey: key }),
        hold: (j) => waitFor(tenant, j, wait, () => c.req.raw.signal),
      });
      return c.json(job, FINAL_STATES.has(job.state) && wait > 0 ? 200 : 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/jobs/{id}/output',
      operationId: 'getJobOutput',
      tags: ['jobs'],
      summary: "A job's output; with follow=1, live as server-sent events until the job ends",
      security: bearer,
      middleware: [read] as const,
      request: {
        params: IdParam,
        query: z.object({
          stream: z.enum(['stdout', 'stderr']).optional(),
          follow: z.enum(['0', '1', 'true', 'false']).optional(),
          attempt: z.coerce.number().int().min(1).max(100).optional(),
        }),
      },
      responses: {
        200: { description: 'Output as text, or an event stream', content: { 'text/plain': { schema: z.string() }, 'text/event-stream': { schema: z.string() } } },
        ...problems(400, 401, 403, 404, 429),
      },
    }),
    async (c) => {
      const tenant = c.get('principal').tenant!;
      const q = c.req.valid('query');
      const row = s.jobs.rowByIdOrName(tenant, c.req.valid('param').id);
      if (q.follow === '1' || q.follow === 'true') {
        const release = s.holds.take(tenant);
        if (!release) throw new QuotaExceeded(`this tenant already holds ${s.holds.max} follows and waits open`, 'holds', HOLDS_RETRY_AFTER_SECONDS);
        return streamSSE(c, (sse) => followOutput(s, tenant, row.id, q.stream, sse, c.req.raw.signal).finally(release));
      }
      // x-corral-job-state reports the state read here: a final one leaves only once on disk.
      const job = await onDisk(s.jobs.get(tenant, row.id));
      const attempt = q.attempt ?? job.attempts.length;
      const chunks = attempt > 0 ? s.output.read(row.id, attempt, q.stream) : [];
      const body = Buffer.concat(chunks.map((ch) => ch.data));
      return c.body(body, 200, {
        'content-type': 'text/plain; charset=utf-8',
        'x-corral-job-state': job.state,
        'x-corral-output-truncated': String(job.outputTruncated),
      });
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/jobs/{id}/cancel',
      operationId: 'cancelJob',
      tags: ['jobs'],
      summary: 'Cancel a job (a running one is killed on its agent)',
      security: bearer,
      middleware: [write] as const,
      request: { params: IdParam },
      responses: { 202: jobResponse('Cancelled, or being cancelled'), ...problems(400, 401, 403, 404) },
    }),
    async (c) => c.json(await onDisk(await s.jobs.cancel(c.get('principal').tenant!, c.req.valid('param').id)), 202),
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/v1/jobs/{id}',
      operationId: 'deleteJob',
      tags: ['jobs'],
      summary: 'Delete a job and its output (cancelling it first if it runs)',
      security: bearer,
      middleware: [write] as const,
      request: { params: IdParam },
      responses: { 204: { description: 'Deleted' }, ...problems(400, 401, 403, 404) },
    }),
    async (c) => {
      await s.jobs.remove(c.get('principal').tenant!, c.req.valid('param').id);
      return c.body(null, 204);
    },
  );

  return app;
}
