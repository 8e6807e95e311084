import { createRoute, z } from '@hono/zod-openapi';
import { requireScope } from '../auth/middleware.js';
import { router, problems, bearer } from '../http/router.js';
import type { Services } from '../services.js';
import { freeSlots } from './conn.js';

/** Agents (admin) and the images they offer (admin sees where; a tenant sees names). */
export function agentRoutes(s: Services) {
  const app = router();

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/agents',
      operationId: 'listAgents',
      tags: ['agents'],
      summary: 'Connected agents, their capacity and pools',
      security: bearer,
      middleware: [requireScope(['admin'])] as const,
      responses: { 200: { description: 'Agents', content: { 'application/json': { schema: z.object({}).passthrough() } } }, ...problems(401, 403) },
    }),
    (c) =>
      c.json(
        {
          agents: s.hub.agents().map((a) => ({
            id: a.id,
            capacity: a.capacity,
            freeSlots: freeSlots(a),
            running: [...a.running.keys()],
            images: a.images,
            pool: a.pool,
            connectedAt: new Date(a.connectedAt).toISOString(),
            lastSeen: new Date(a.lastSeen).toISOString(),
          })),
        },
        200,
      ),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/images',
      operationId: 'listImages',
      tags: ['images'],
      summary: 'Images jobs may use',
      security: bearer,
      middleware: [requireScope(['admin', 'jobs:read', 'jobs:write', 'functions:read'])] as const,
      responses: { 200: { description: 'Images', content: { 'application/json': { schema: z.object({}).passthrough() } } }, ...problems(401, 403) },
    }),
    (c) => {
      const admin = c.get('principal').scopes.has('admin');
      const images = s.images.list().map((i) => (admin ? i : { name: i.name, available: i.agents.length > 0 }));
      return c.json({ images }, 200);
    },
  );

  return app;
}
