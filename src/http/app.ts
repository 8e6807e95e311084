import { Hono } from 'hono';
import { requestId } from 'hono/request-id';
import { routePath } from 'hono/route';
import { authenticate } from '../auth/middleware.js';
import { jobRoutes } from '../jobs/routes.js';
import { functionRoutes } from '../functions/routes.js';
import { triggerRoutes } from '../triggers/routes.js';
import { callbackRoutes } from '../callbacks/routes.js';
import { tenantRoutes } from '../tenants/routes.js';
import { agentRoutes } from '../agents/routes.js';
import { usageRoutes } from '../usage/routes.js';
import type { Services } from '../services.js';
import type { AppEnv } from './env.js';
import { checkedJsonBody } from './json-body.js';
import { ApiError, onError, problem } from './errors.js';
import { opsRoutes } from './ops.js';
import { describeApi } from './openapi.js';
import { cappedBody } from './body.js';
import { refuseNewWorkWhile } from './drain.js';
import { router } from './router.js';
import { consoleRoutes } from '../console/routes.js';

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;

/** The one route whose body is raw bytes (a function's stdin), not JSON: by method and shape, not a suffix a name could supply. */
export const isRawBodyRoute = (method: string, path: string) => method === 'POST' && /^\/v1\/functions\/[^/]+\/invoke$/.test(path);

/**
 * Builds the gateway's HTTP app over `services`. Nothing here holds state of its own;
 * `draining` says when the gateway is shutting down (new work is then refused with 503).
 */
export function createApp(s: Services, o: { draining?: () => boolean } = {}) {
  const app = new Hono<AppEnv>();

  app.use('*', requestId({ headerName: 'x-request-id', limitLength: 64 }));
  // One histogram child per (method, route, status): resolving labels on every request showed in profiles.
  const timers = new Map<string, { observe(v: number): void }>();
  app.use('*', async function observe(c, next) {
    const started = performance.now();
    c.set('services', s);
    c.set('log', s.log);
    await next();
    const seconds = (performance.now() - started) / 1000;
    const labels = { method: c.req.method, route: routePath(c) ?? 'unmatched', status: String(c.res.status) };
    const key = `${labels.method} ${labels.route} ${labels.status}`;
    let timer = timers.get(key);
    if (!timer) timers.set(key, (timer = s.metrics.httpDuration.labels(labels)));
    timer.observe(seconds);
    const failed = c.res.status >= 500;
    if (!failed && !s.log.isLevelEnabled('info')) return;
    const line = { requestId: c.get('requestId'), method: c.req.method, path: c.req.path, status: c.res.status, ms: +(seconds * 1000).toFixed(2), tenant: c.get('principal')?.tenant };
    if (failed) s.log.error(line, 'request failed');
    else s.log.info(line, 'request');
  });
  app.use('*', refuseNewWorkWhile(o.draining ?? (() => false)));
  app.use('*', cappedBody(s.config.bodyLimit));
  app.use('/v1/*', async function jsonOnly(c, next) {
    if (c.req.method === 'POST' || c.req.method === 'PUT' || c.req.method === 'PATCH') {
      const type = c.req.header('content-type');
      const length = c.req.header('content-length');
      const hasBody = type !== undefined || (length !== undefined && length !== '0') || c.req.header('transfer-encoding') !== undefined;
      if (hasBody && !(type && JSON_TYPE.test(type)) && !isRawBodyRoute(c.req.method, c.req.path)) {
        throw new ApiError('unsupported_media_type', 'the body must be application/json', [{ field: 'content-type', message: `got ${type ?? 'none'}` }]);
      }
    }
    await next();
  });
  app.use('/v1/*', authenticate(s.verifier, s.tenants.exists));
  app.use('/v1/*', checkedJsonBody(JSON_TYPE, isRawBodyRoute));

  const api = router();
  api.route('/', tenantRoutes(s));
  api.route('/', jobRoutes(s));
  api.route('/', functionRoutes(s));
  api.route('/', triggerRoutes(s));
  api.route('/', callbackRoutes(s));
  api.route('/', agentRoutes(s));
  api.route('/', usageRoutes(s));
  describeApi(api);
  app.route('/', api);
  opsRoutes(app, s);
  consoleRoutes(app);

  const allowed = allowedMethods(app.routes);
  app.notFound((c) => {
    const methods = allowed(c.req.path);
    if (methods.length && !methods.includes(c.req.method)) {
      const list = methods.join(', ');
      return problem(c, 'method_not_allowed', `${c.req.method} is not allowed on ${c.req.path}`, [{ field: '(method)', message: `allowed: ${list}` }], { allow: list });
    }
    return problem(c, 'not_found', `no route for ${c.req.method} ${c.req.path}`);
  });
  app.onError(onError);
  return app;
}

/** The methods the routes answer on a path, for a 405's Allow header; built on first use, once every route is in. */
export function allowedMethods(routes: ReadonlyArray<{ method: string; path: string }>): (path: string) => string[] {
  let table: Array<{ method: string; re: RegExp }> | undefined;
  const segment = (s: string) => (s.startsWith(':') ? '[^/]+' : s === '*' ? '.*' : s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  return (path) => {
    table ??= routes.filter((r) => r.method !== 'ALL').map((r) => ({ method: r.method, re: new RegExp(`^${r.path.split('/').map(segment).join('/')}$`) }));
    const methods = new Set(table.filter((r) => r.re.test(path)).map((r) => r.method));
    if (methods.has('GET')) methods.add('HEAD');
    return [...methods].sort();
  };
}
