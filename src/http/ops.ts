import { timingSafeEqual } from 'node:crypto';
import { docsRoutes } from './docs.js';
import type { Hono } from 'hono';
import type { AppEnv } from './env.js';
import { ApiError } from './errors.js';
import { InvalidToken } from '../auth/verifier.js';
import type { Services } from '../services.js';

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Health, metrics and the API docs page. */
export function opsRoutes(app: Hono<AppEnv>, s: Services): void {
  app.get('/healthz', (c) => c.json({ ok: true, agents: s.hub.count() }));

  app.get('/metrics', async (c) => {
    const m = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '');
    if (!m) throw new ApiError('unauthorized', 'missing bearer token', [{ field: 'authorization', message: 'required' }]);
    const token = m[1]!;
    const scrape = s.config.metricsToken;
    if (!(scrape && sameSecret(token, scrape))) {
      try {
        const p = await s.verifier.verify(token);
        if (!p.scopes.has('admin')) throw new ApiError('forbidden', 'metrics need admin scope or the scrape token', [{ field: 'scope', message: 'needs admin' }]);
      } catch (err) {
        if (err instanceof InvalidToken) throw new ApiError('unauthorized', err.message, [{ field: 'authorization', message: err.message }]);
        throw err;
      }
    }
    return c.body(await s.metrics.registry.metrics(), 200, { 'content-type': s.metrics.registry.contentType });
  });

  docsRoutes(app);
}
