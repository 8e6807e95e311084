import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z, type OpenAPIHono } from '@hono/zod-openapi';
import { packageRoot } from '../paths.js';
import type { AppEnv } from './env.js';
import { bearer, open, problems } from './router.js';

/** Every operation carries one of these; the document lists them in this order. */
export const TAGS = [
  { name: 'jobs', description: 'Submit commands to run in a container, follow their output, cancel and delete them.' },
  { name: 'functions', description: 'Named, versioned job templates a tenant saves once and invokes over HTTP.' },
  { name: 'triggers', description: "Signed webhook URLs that invoke a function; `/hooks/{triggerId}` is where senders fire them." },
  { name: 'callbacks', description: "Signed calls to a job's callback URL when it ends: the signing secret and each job's deliveries." },
  { name: 'usage', description: 'What a tenant has queued and running, its last 30 days, and its daily CPU budget.' },
  { name: 'tenants', description: 'Tenants and their quotas (admin).' },
  { name: 'agents', description: 'The machines that run jobs, their capacity and container pools (admin).' },
  { name: 'images', description: 'The container images jobs may name.' },
  { name: 'ops', description: 'Health, metrics and this description.' },
  { name: 'console', description: 'The web console: a page that calls this API with the token pasted at sign-in.' },
] as const;

export type Tag = (typeof TAGS)[number]['name'];

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

const text = (mediaType: string, description: string) => ({ description, content: { [mediaType]: { schema: z.string() } } });

/**
 * Registers what the API description says about itself, and the routes served outside
 * zod-openapi (health, metrics, the console and docs pages, the description itself), then
 * serves the document at `/openapi.json`.
 */
export function describeApi(api: OpenAPIHono<AppEnv>): void {
  const registry = api.openAPIRegistry;
  registry.registerComponent('securitySchemes', 'bearer', {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description: 'A token from `corral token`: its scopes say what it may do, its tenant whose jobs it sees.',
  });

  registry.registerPath({
    method: 'get',
    path: '/healthz',
    operationId: 'getHealth',
    tags: ['ops'],
    summary: 'Liveness, and how many agents are connected',
    security: open,
    responses: {
      200: {
        description: 'The gateway serves',
        content: { 'application/json': { schema: z.object({ ok: z.literal(true), agents: z.number().int().openapi({ description: 'Connected agents' }) }) } },
      },
    },
  });
  registry.registerPath({
    method: 'get',
    path: '/metrics',
    operationId: 'getMetrics',
    tags: ['ops'],
    summary: 'Prometheus metrics (admin token, or the scrape token as a bearer)',
    security: bearer,
    responses: { 200: text('text/plain', 'Prometheus text exposition format'), ...problems(401, 403) },
  });
  registry.registerPath({
    method: 'get',
    path: '/openapi.json',
    operationId: 'getOpenApi',
    tags: ['ops'],
    summary: 'This API description (OpenAPI 3.1)',
    security: open,
    responses: { 200: { description: 'The description', content: { 'application/json': { schema: z.object({}).passthrough() } } } },
  });
  registry.registerPath({
    method: 'get',
    path: '/',
    operationId: 'getConsole',
    tags: ['console'],
    summary: 'The web console (its script and stylesheet are under /console/)',
    security: open,
    responses: { 200: text('text/html', 'The page') },
  });
  registry.registerPath({
    method: 'get',
    path: '/docs',
    operationId: 'getDocs',
    tags: ['ops'],
    summary: 'The API description as a browsable page (Swagger UI, served locally)',
    security: open,
    responses: { 200: text('text/html', 'The page') },
  });

  api.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: {
      title: 'corral',
      version: packageVersion(),
      description:
        'Run commands in pre-warmed, unprivileged LXC containers on demand. Every `/v1` route takes a bearer JWT; ' +
        'every error is `application/problem+json` (the `Problem` schema).',
      license: { name: 'MIT', url: 'https://spdx.org/licenses/MIT.html' },
    },
    // Relative: the description is served by the gateway it describes, at whatever address that has.
    servers: [{ url: '/', description: 'The gateway serving this document' }],
    tags: TAGS.map((t) => ({ ...t })),
  });
}
