import { createRoute, z } from '@hono/zod-openapi';
import { requireScope } from '../auth/middleware.js';
import { router, problems, bearer } from '../http/router.js';
import type { Services } from '../services.js';
import { QuotaPatchSchema } from '../tenants/quota.js';

const DaySchema = z
  .object({
    day: z.string().openapi({ example: '2026-11-29', description: 'UTC day; in the all-tenant view the total spans "FIRST..LAST"' }),
    jobs: z.number().int().openapi({ description: 'Jobs that took a final state that day' }),
    attempts: z.number().int(),
    cpuSeconds: z.number(),
    wallSeconds: z.number(),
    gbSeconds: z.number().openapi({ description: 'Memory limit in GB × wall seconds' }),
    peakMemoryBytes: z.number().int(),
    failures: z.record(z.string(), z.number().int()).openapi({ description: 'Jobs that ended other than succeeded, by reason', example: { timeout: 2, exit: 1 } }),
  })
  .openapi('UsageDay');

const HourSchema = z
  .object({
    hour: z.string().openapi({ example: '2026-11-29T17', description: "UTC hour, 'YYYY-MM-DDTHH'" }),
    jobs: z.number().int().openapi({ description: 'Jobs that took a final state in that hour' }),
    failures: z.number().int().openapi({ description: 'Of those, the jobs that did not succeed' }),
  })
  .openapi('UsageHour');

const NowSchema = z
  .object({ queued: z.number().int(), running: z.number().int(), oldestQueuedAgeSeconds: z.number().int() })
  .openapi('UsageNow');

const BudgetSchema = z
  .object({
    cpuSecondsPerDay: z.number().nullable(),
    usedToday: z.number().openapi({ description: 'CPU-seconds today (UTC): ended attempts plus running ones at CPU limit × time so far' }),
    leftToday: z.number().nullable().openapi({ description: 'null when unlimited' }),
  })
  .openapi('Budget');

const UsageSchema = z
  .object({
    tenant: z.string(),
    quota: QuotaPatchSchema.required(),
    now: NowSchema,
    days: z.array(DaySchema).openapi({ description: 'Last 30 days, today first' }),
    hours: z.array(HourSchema).openapi({ description: 'Last 48 UTC hours, the current one first; hours without jobs are zeros' }),
    budget: BudgetSchema,
  })
  .openapi('Usage');

const AllUsageSchema = z
  .object({
    day: z.string(),
    tenants: z.array(z.object({ tenant: z.string(), now: NowSchema, today: DaySchema, last30Days: DaySchema, budget: BudgetSchema })),
  })
  .openapi('AllUsage');

const ok = (schema: z.ZodType, description: string) => ({ description, content: { 'application/json': { schema } } });
const Params = z.object({ id: z.string().min(1).max(63) });

/** Usage: a tenant's own, and the admin's per-tenant and all-tenant views. */
export function usageRoutes(s: Services) {
  const app = router();
  const admin = requireScope(['admin']);

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/usage',
      operationId: 'getUsage',
      tags: ['usage'],
      summary: "The calling tenant's quota, what it has queued and running, its last 30 days and 48 hours, and today's CPU budget",
      security: bearer,
      middleware: [requireScope(['jobs:read', 'functions:read'], { tenant: true })] as const,
      responses: { 200: ok(UsageSchema, 'Usage'), ...problems(401, 403) },
    }),
    (c) => c.json(s.usage.report(c.get('principal').tenant!), 200),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/usage/all',
      operationId: 'getAllUsage',
      tags: ['usage'],
      summary: "Every tenant's usage: now, today, the last 30 days' totals and the budget (admin)",
      security: bearer,
      middleware: [admin] as const,
      responses: { 200: ok(AllUsageSchema, 'Usage of every tenant'), ...problems(401, 403) },
    }),
    (c) => c.json(s.usage.all(), 200),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/tenants/{id}/usage',
      operationId: 'getTenantUsage',
      tags: ['usage'],
      summary: "A tenant's usage, as the tenant sees it at /v1/usage (admin)",
      security: bearer,
      middleware: [admin] as const,
      request: { params: Params },
      responses: { 200: ok(UsageSchema, 'Usage'), ...problems(400, 401, 403, 404) },
    }),
    (c) => c.json(s.usage.report(c.req.valid('param').id), 200),
  );

  return app;
}
