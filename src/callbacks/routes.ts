import { createRoute, z } from '@hono/zod-openapi';
import { requireScope } from '../auth/middleware.js';
import { CALLBACK_STATES } from '../db/schema/callbacks.js';
import { MAX_NAME_LENGTH } from '../jobs/spec.js';
import { bearer, problems, router } from '../http/router.js';
import type { Services } from '../services.js';

const iso = (ms: number) => new Date(ms).toISOString();

const SecretSchema = z
  .object({ secret: z.string().openapi({ example: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw' }) })
  .openapi('CallbackSecret');

const TrySchema = z
  .object({
    n: z.number().int(),
    at: z.string(),
    status: z.number().int().nullable().openapi({ description: "The receiver's HTTP status; null when no answer came (refused, timed out, unreachable)." }),
    error: z.string().nullable(),
    durationMs: z.number().int(),
  })
  .openapi('CallbackTry');

const DeliverySchema = z
  .object({
    id: z.string().openapi({ description: 'The `webhook-id` header of every try of this delivery.' }),
    url: z.string(),
    state: z.enum(CALLBACK_STATES),
    nextAt: z.string().nullable().openapi({ description: 'When the next try is due; null once the delivery is over.' }),
    lastStatus: z.number().int().nullable(),
    lastError: z.string().nullable(),
    createdAt: z.string(),
    updatedAt: z.string(),
    tries: z.array(TrySchema),
  })
  .openapi('CallbackDelivery');

const IdParam = z.object({ id: z.string().min(1).max(MAX_NAME_LENGTH * 4).openapi({ description: 'Job id or name' }) });

/** The tenant's callback signing secret and each job's callback deliveries. */
export function callbackRoutes(s: Services) {
  const app = router();
  const read = requireScope(['jobs:read'], { tenant: true });
  const write = requireScope(['jobs:write'], { tenant: true });

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/callback-secret',
      operationId: 'getCallbackSecret',
      tags: ['callbacks'],
      summary: "The tenant's callback signing secret (created on first use), to verify callbacks with",
      security: bearer,
      middleware: [write] as const,
      responses: { 200: { description: 'The current secret', content: { 'application/json': { schema: SecretSchema } } }, ...problems(401, 403) },
    }),
    async (c) => c.json({ secret: await s.callbacks.secrets.current(c.get('principal').tenant!) }, 200),
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/callback-secret/rotate',
      operationId: 'rotateCallbackSecret',
      tags: ['callbacks'],
      summary: 'Replace the callback signing secret; the old one keeps signing (a second signature) for 24 h',
      security: bearer,
      middleware: [write] as const,
      responses: { 200: { description: 'The new secret', content: { 'application/json': { schema: SecretSchema } } }, ...problems(401, 403, 415) },
    }),
    async (c) => c.json({ secret: await s.callbacks.secrets.rotate(c.get('principal').tenant!) }, 200),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/jobs/{id}/deliveries',
      operationId: 'listJobDeliveries',
      tags: ['callbacks'],
      summary: "A job's callback deliveries, each with its tries",
      security: bearer,
      middleware: [read] as const,
      request: { params: IdParam },
      responses: {
        200: { description: 'Deliveries, oldest first', content: { 'application/json': { schema: z.object({ deliveries: z.array(DeliverySchema) }) } } },
        ...problems(400, 401, 403, 404),
      },
    }),
    (c) => {
      const row = s.jobs.rowByIdOrName(c.get('principal').tenant!, c.req.valid('param').id);
      const deliveries = s.callbacks.outbox.ofJob(row.id).map((d) => ({
        id: d.id,
        url: d.url,
        state: d.state,
        nextAt: d.state === 'pending' ? iso(d.nextAt) : null,
        lastStatus: d.lastStatus,
        lastError: d.lastError,
        createdAt: iso(d.createdAt),
        updatedAt: iso(d.updatedAt),
        tries: d.triesList.map((t) => ({ ...t, at: iso(t.at) })),
      }));
      return c.json({ deliveries }, 200);
    },
  );

  return app;
}
