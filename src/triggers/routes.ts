import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { requireScope } from '../auth/middleware.js';
import { parseJsonBody } from '../http/json-body.js';
import { FunctionNameSchema } from '../functions/schema.js';
import type { AppEnv } from '../http/env.js';
import { problem } from '../http/errors.js';
import { bearer, problems, router } from '../http/router.js';
import type { Services } from '../services.js';
import { TriggerIdSchema, TriggerRequestSchema, TriggerViewSchema, TriggerWithSecretSchema } from './schema.js';
import { BadSignature } from './service.js';

const TRIGGER_ID = /^trg_[0-9A-Z]{26}$/;

const NameParam = z.object({ name: FunctionNameSchema });
const NameIdParams = z.object({ name: FunctionNameSchema, id: TriggerIdSchema });
const ok = (schema: z.ZodType, description: string) => ({ description, content: { 'application/json': { schema } } });

/** What a trigger's `url` starts with: the configured public URL, else the origin this request came to. */
function baseUrl(c: Context<AppEnv>, publicUrl: string | undefined): string {
  return (publicUrl ?? new URL(c.req.url).origin).replace(/\/+$/, '');
}

/** Managing a function's triggers (JWT), and `POST /hooks/:id`, where senders fire them (signature). */
export function triggerRoutes(s: Services) {
  const app = router();
  const read = requireScope(['functions:read'], { tenant: true });
  const write = requireScope(['functions:write'], { tenant: true });
  const base = (c: Context<AppEnv>) => baseUrl(c, s.config.publicUrl);

  app.openAPIRegistry.registerComponent('securitySchemes', 'standardWebhooks', {
    type: 'apiKey',
    in: 'header',
    name: 'webhook-signature',
    description:
      'Standard Webhooks: `webhook-id`, `webhook-timestamp` (Unix seconds, within 5 minutes of now) and `webhook-signature` ' +
      '(`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, several space-separated allowed), keyed with the trigger\'s `whsec_` secret.',
  });
  app.openAPIRegistry.registerComponent('securitySchemes', 'githubSignature', {
    type: 'apiKey',
    in: 'header',
    name: 'X-Hub-Signature-256',
    description: "GitHub: `sha256=<hex HMAC-SHA256 of the raw body>` keyed with the trigger's secret; `X-GitHub-Delivery` is the delivery id.",
  });

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/functions/{name}/triggers',
      operationId: 'createTrigger',
      tags: ['triggers'],
      summary: "Create a webhook trigger for a function (its secret is shown in this answer only)",
      security: bearer,
      middleware: [write] as const,
      request: { params: NameParam, body: { content: { 'application/json': { schema: TriggerRequestSchema } }, required: false } },
      responses: { 201: ok(TriggerWithSecretSchema, 'Created; keep the secret, it is not shown again'), ...problems(400, 401, 403, 404, 415, 422) },
    }),
    async (c) => {
      const bytes = new Uint8Array(await c.req.arrayBuffer());
      // No body, or only blanks, asks for the defaults.
      const blank = /^\s*$/.test(Buffer.from(bytes).toString('latin1'));
      const body = TriggerRequestSchema.parse(blank ? {} : parseJsonBody(bytes));
      const t = await s.triggers.create(c.get('principal').tenant!, c.req.valid('param').name, body.kind, base(c));
      return c.json(t, 201, { location: `/v1/functions/${encodeURIComponent(t.function)}/triggers/${t.id}` });
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/functions/{name}/triggers',
      operationId: 'listTriggers',
      tags: ['triggers'],
      summary: "List a function's triggers (never their secrets)",
      security: bearer,
      middleware: [read] as const,
      request: { params: NameParam },
      responses: { 200: ok(z.object({ triggers: z.array(TriggerViewSchema) }), "The function's triggers, oldest first"), ...problems(400, 401, 403, 404) },
    }),
    (c) => c.json({ triggers: s.triggers.list(c.get('principal').tenant!, c.req.valid('param').name, base(c)) }, 200),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/functions/{name}/triggers/{id}',
      operationId: 'getTrigger',
      tags: ['triggers'],
      summary: 'Get a trigger (never its secret)',
      security: bearer,
      middleware: [read] as const,
      request: { params: NameIdParams },
      responses: { 200: ok(TriggerViewSchema, 'The trigger'), ...problems(400, 401, 403, 404) },
    }),
    (c) => {
      const p = c.req.valid('param');
      return c.json(s.triggers.get(c.get('principal').tenant!, p.name, p.id, base(c)), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/v1/functions/{name}/triggers/{id}',
      operationId: 'deleteTrigger',
      tags: ['triggers'],
      summary: 'Delete a trigger: its URL answers 401 from now on',
      security: bearer,
      middleware: [write] as const,
      request: { params: NameIdParams },
      responses: { 204: { description: 'Deleted' }, ...problems(400, 401, 403, 404) },
    }),
    async (c) => {
      const p = c.req.valid('param');
      await s.triggers.remove(c.get('principal').tenant!, p.name, p.id);
      return c.body(null, 204);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/functions/{name}/triggers/{id}/rotate',
      operationId: 'rotateTriggerSecret',
      tags: ['triggers'],
      summary: 'Give a trigger a new secret (shown once); the previous one still verifies for 24 hours',
      security: bearer,
      middleware: [write] as const,
      request: { params: NameIdParams },
      responses: { 200: ok(TriggerWithSecretSchema, 'The new secret; the previous one verifies until previousSecretExpiresAt'), ...problems(400, 401, 403, 404) },
    }),
    async (c) => {
      const p = c.req.valid('param');
      return c.json(await s.triggers.rotate(c.get('principal').tenant!, p.name, p.id, base(c)), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/hooks/{triggerId}',
      operationId: 'fireHook',
      tags: ['triggers'],
      summary: "Fire a trigger: a signed request whose body becomes the function's stdin",
      description:
        'No JWT: the credential is the signature. The raw body becomes stdin; `CORRAL_EVENT` (`X-GitHub-Event`, or the JSON ' +
        "body's string `type`), `CORRAL_DELIVERY_ID`, `CORRAL_TRIGGER_ID` and `CORRAL_CONTENT_TYPE` are in the job's env. Answers " +
        '202 with the job id as soon as the job is queued on disk; never waits for it to run. A delivery id seen before ' +
        '(`webhook-id`, `X-GitHub-Delivery`) answers the job it made the first time. An unknown trigger and a bad, missing or ' +
        'stale signature are the same 401. Counts against the tenant\'s `firesPerMinute` and `maxQueued` (429 with Retry-After).',
      security: [{ standardWebhooks: [] }, { githubSignature: [] }],
      request: {
        // Any string: an id that cannot be a trigger's is the same 401 as an unknown one, not a 400.
        params: z.object({ triggerId: z.string().openapi({ example: 'trg_01J9Z8Q4W3X2V1T0S9R8Q7P6N5' }) }),
        headers: z.object({
          'webhook-id': z.string().optional(),
          'webhook-timestamp': z.string().optional(),
          'webhook-signature': z.string().optional(),
          'x-hub-signature-256': z.string().optional(),
          'x-github-delivery': z.string().optional(),
          'x-github-event': z.string().optional(),
        }),
        body: { content: { '*/*': { schema: z.string().openapi({ format: 'binary' }) } }, required: false },
      },
      responses: {
        202: ok(z.object({ id: z.string().openapi({ description: 'The job this delivery made (the same one on a replay)' }) }), 'Queued (on disk)'),
        ...problems(400, 401, 413, 422, 429),
      },
    }),
    async (c) => {
      const id = c.req.param('triggerId') ?? '';
      // An id that is not even shaped like a trigger's is refused before the body is read and
      // hashed: every id's shape is public, so this tells an unauthenticated sender nothing, and
      // it keeps junk requests from costing a body read, two decryptions and two HMACs.
      if (!TRIGGER_ID.test(id)) return problem(c, 'unauthorized', new BadSignature().message);
      const body = Buffer.from(await c.req.arrayBuffer());
      try {
        const { jobId } = await s.triggers.fire(id, { header: (n) => c.req.header(n), body });
        return c.json({ id: jobId }, 202);
      } catch (err) {
        // Says no more: not whether the trigger exists, nor which part of the signature was wrong.
        if (err instanceof BadSignature) return problem(c, 'unauthorized', err.message);
        throw err;
      }
    },
  );

  return app;
}
