import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Hono, MiddlewareHandler } from 'hono';
import type { AppEnv } from '../http/env.js';
import { packageRoot } from '../paths.js';

/**
 * Every console response carries these. The console is one script and one stylesheet from this
 * origin: no inline script or style, no framing, no form posts elsewhere.
 */
export const CONSOLE_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; manifest-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
} as const;

const TYPES = { 'app.js': 'text/javascript; charset=utf-8', 'app.css': 'text/css; charset=utf-8' } as const;
type Asset = keyof typeof TYPES;

interface Built {
  files: Map<Asset, Buffer>;
  version: string;
}

/** Reads the built bundle once; null when `npm run build` has not produced it. */
function load(dir: string): Built | null {
  try {
    const files = new Map((Object.keys(TYPES) as Asset[]).map((f) => [f, readFileSync(join(dir, f))]));
    const hash = createHash('sha256');
    for (const body of files.values()) hash.update(body);
    return { files, version: hash.digest('hex').slice(0, 16) };
  } catch {
    return null;
  }
}

const page = (v: string) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>corral console</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light">
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/console/app.css?v=${v}"></head>
<body><div id="app"><noscript>The corral console needs JavaScript.</noscript></div>
<script type="module" src="/console/app.js?v=${v}"></script></body></html>`;

/**
 * The web console: `GET /` serves the page, `/console/app.js` and `/console/app.css` the bundle
 * built into dist/console. Assets asked for with the current version are cached for a year (the
 * page names them by content hash); the page itself is revalidated every time.
 */
export function consoleRoutes(app: Hono<AppEnv>, dir = join(packageRoot(), 'dist/console')): void {
  let built: Built | null = null;
  const current = () => (built ??= load(dir));
  const headers: MiddlewareHandler<AppEnv> = async function consoleHeaders(c, next) {
    await next();
    for (const [k, v] of Object.entries(CONSOLE_HEADERS)) c.res.headers.set(k, v);
  };
  app.use('/', headers);
  app.use('/console/*', headers);
  app.get('/', (c) => {
    const b = current();
    if (!b) return c.text('The console is not built: run `npm run build`.\n', 503);
    return c.html(page(b.version), 200, { 'cache-control': 'no-cache' });
  });
  app.get('/console/:file', (c) => {
    const file = c.req.param('file') as Asset;
    const body = Object.hasOwn(TYPES, file) ? current()?.files.get(file) : undefined;
    if (!body) return c.text('not found\n', 404);
    const fresh = c.req.query('v') === current()!.version;
    return c.body(new Uint8Array(body), 200, {
      'content-type': TYPES[file],
      'cache-control': fresh ? 'public, max-age=31536000, immutable' : 'no-cache',
    });
  });
}
