import { createRoute, z } from '@hono/zod-openapi';
import { requireScope } from '../auth/middleware.js';
import { router, problems, bearer } from '../http/router.js';
import type { Services } from '../services.js';
import { QuotaPatchSchema } from './quota.js';

const TenantIdSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'tenant ids are 1-63 lowercase letters, digits, "-" or "_"')
  .openapi({ example: 'acme' });

const TenantSchema = z
  .object({ id: z.string(), quota: QuotaPatchSchema.required(), createdAt: z.string() })
  .openapi('Tenant');

const json = <T extends z.ZodType>(schema: T) => ({ content: { 'application/json': { schema } }, required: true as const });
const ok = (schema: z.ZodType, description: string) => ({ description, content: { 'application/json': { schema } } });
const Params = z.object({ id: TenantIdSchema });

/** Admin routes: create, read and change tenants and their quotas. */
export function tenantRoutes(s: Services) {
  const app = router();
  const admin = requireScope(['admin']);

  app.openapi(
    createRoute({
      method: 'post',
      path: '/v1/tenants',
      operationId: 'createTenant',
      summary: 'Create a tenant, with its quota or the defaults (admin)',
      tags: ['tenants'],
      security: bearer,
      middleware: [admin] as const,
      request: { body: json(z.object({ id: TenantIdSchema, quota: QuotaPatchSchema.optional() }).strict()) },
      responses: { 201: ok(TenantSchema, 'Created'), ...problems(400, 401, 403, 409, 413, 415) },
    }),
    async (c) => {
      const body = c.req.valid('json');
      return c.json(await s.tenants.create(body.id, body.quota), 201);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/tenants/{id}',
      operationId: 'getTenant',
      summary: 'Get a tenant and its quota (admin)',
      tags: ['tenants'],
      security: bearer,
      middleware: [admin] as const,
      request: { params: Params },
      responses: { 200: ok(TenantSchema, 'The tenant'), ...problems(400, 401, 403, 404) },
    }),
    (c) => c.json(s.tenants.get(c.req.valid('param').id), 200),
  );

  app.openapi(
    createRoute({
      method: 'patch',
      path: '/v1/tenants/{id}',
      operationId: 'updateTenantQuota',
      summary: "Change a tenant's quota: the fields given are merged with the stored ones (admin)",
      tags: ['tenants'],
      security: bearer,
      middleware: [admin] as const,
      request: { params: Params, body: json(z.object({ quota: QuotaPatchSchema }).strict()) },
      responses: { 200: ok(TenantSchema, 'Updated'), ...problems(400, 401, 403, 404, 413, 415) },
    }),
    async (c) => c.json(await s.tenants.updateQuota(c.req.valid('param').id, c.req.valid('json').quota), 200),
  );

  return app;
}
