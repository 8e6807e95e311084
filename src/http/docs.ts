import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Hono } from 'hono';
import type { AppEnv } from './env.js';

const ASSETS: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
};

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>corral API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="ui"></div><script src="/docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#ui', deepLinking: true });</script>
</body></html>`;

/**
 * `/docs`: Swagger UI over `/openapi.json`, served from the swagger-ui-dist package so the page
 * works without reaching any CDN.
 */
export function docsRoutes(app: Hono<AppEnv>): void {
  const dir = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
  const files = new Map(Object.keys(ASSETS).map((f) => [f, readFileSync(join(dir, f))]));
  app.get('/docs', (c) => c.html(PAGE));
  app.get('/docs/:file', (c) => {
    const file = c.req.param('file');
    const body = files.get(file);
    if (!body) return c.notFound();
    return c.body(body, 200, { 'content-type': ASSETS[file]!, 'cache-control': 'public, max-age=86400' });
  });
}
