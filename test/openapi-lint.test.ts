import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testGateway, type TestGateway } from './fixtures.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const REDOCLY = join(ROOT, 'node_modules', '@redocly', 'cli', 'bin', 'cli.js');
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'] as const;

/**
 * Operations a caller reaches without a bearer token. `/hooks/{triggerId}` is among them: its
 * credential is a signature header the handler checks, described by its own security schemes.
 */
const PUBLIC = new Set(['get /', 'get /healthz', 'get /openapi.json', 'get /docs', 'post /hooks/{triggerId}']);
const SIGNED = new Set(['post /hooks/{triggerId}']);

interface Operation {
  operationId?: string;
  summary?: string;
  tags?: string[];
  security?: Array<Record<string, string[]>>;
  responses: Record<string, { content?: Record<string, { schema?: { $ref?: string } }> }>;
}
interface Doc {
  info: { title: string; version: string; description?: string; license?: { name: string; url?: string; identifier?: string } };
  servers?: Array<{ url: string }>;
  tags?: Array<{ name: string; description?: string }>;
  paths: Record<string, Partial<Record<(typeof METHODS)[number], Operation>>>;
  components: { schemas: Record<string, { properties?: Record<string, unknown>; required?: string[] }>; securitySchemes: Record<string, unknown> };
}
interface LintProblem {
  ruleId: string;
  severity: 'error' | 'warn';
  message: string;
  location: Array<{ pointer: string }>;
}
interface LintReport {
  totals: { errors: number; warnings: number };
  problems: LintProblem[];
}

function operations(doc: Doc): Array<{ key: string; op: Operation }> {
  return Object.entries(doc.paths).flatMap(([path, item]) =>
    METHODS.flatMap((m) => (item[m] ? [{ key: `${m} ${path}`, op: item[m] }] : [])),
  );
}

/** Runs `redocly lint` on `file` with the recommended ruleset, offline; resolves with its JSON report whatever the exit code. */
function redoclyLint(dir: string, file: string): Promise<LintReport> {
  // Telemetry off (in the config and the environment) and no update check: the linter reaches no network.
  writeFileSync(join(dir, 'redocly.yaml'), 'extends:\n  - recommended\ntelemetry: off\n');
  const env = { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true', REDOCLY_SUPPRESS_NOTIFICATIONS: 'true' };
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [REDOCLY, 'lint', file, '--config=redocly.yaml', '--format=json'], { cwd: dir, env, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      try {
        resolve(JSON.parse(stdout) as LintReport);
      } catch {
        reject(new Error(`redocly lint gave no JSON report (${err?.message ?? 'exit 0'}): ${stderr}`));
      }
    });
  });
}

let g: TestGateway;
let doc: Doc;
let dir: string;

beforeAll(async () => {
  g = await testGateway();
  doc = (await (await g.req('GET', '/openapi.json')).json()) as Doc;
  dir = mkdtempSync(join(tmpdir(), 'corral-openapi-'));
});
afterAll(async () => {
  await g?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the OpenAPI description', () => {
  it("passes redocly lint's recommended ruleset with no errors, the only warnings being public routes that answer no 4xx", async () => {
    writeFileSync(join(dir, 'openapi.json'), JSON.stringify(doc, null, 2));
    const report = await redoclyLint(dir, 'openapi.json');
    const summary = report.problems.map((p) => `${p.severity} ${p.ruleId} ${p.location[0]?.pointer ?? ''}: ${p.message}`);
    expect(report.totals.errors, summary.join('\n')).toBe(0);
    const warnings = report.problems.filter((p) => p.severity === 'warn');
    for (const w of warnings) {
      expect(w.ruleId, summary.join('\n')).toBe('operation-4xx-response');
      const [, path, method] = /^#\/paths\/(.+)\/(\w+)\/responses$/.exec(w.location[0]!.pointer)!;
      expect(PUBLIC, w.location[0]!.pointer).toContain(`${method} ${path!.replaceAll('~1', '/').replaceAll('~0', '~')}`);
    }
  }, 60_000);

  it('names the package version, the MIT license, a server and a described tag for each area', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(doc.info.version).toBe(pkg.version);
    expect(doc.info.license?.name).toBe('MIT');
    expect(doc.info.license?.url ?? doc.info.license?.identifier).toBeTruthy();
    expect(doc.servers?.length).toBeGreaterThan(0);
    const tags = doc.tags ?? [];
    expect(tags.map((t) => t.name)).toEqual(expect.arrayContaining(['jobs', 'functions', 'triggers', 'callbacks', 'usage', 'tenants', 'agents', 'images', 'ops']));
    for (const t of tags) expect(t.description, t.name).toBeTruthy();
  });

  it('gives every operation a unique camelCase operationId, a summary and tags the document describes', () => {
    const described = new Set((doc.tags ?? []).map((t) => t.name));
    const ids = new Map<string, string>();
    const ops = operations(doc);
    expect(ops.length).toBeGreaterThan(30);
    for (const { key, op } of ops) {
      expect(op.operationId, key).toMatch(/^[a-z][a-zA-Z0-9]*$/);
      expect(ids.get(op.operationId!), `${key} reuses ${op.operationId}`).toBeUndefined();
      ids.set(op.operationId!, key);
      expect(op.summary?.trim(), key).toBeTruthy();
      expect(op.tags?.length, key).toBeGreaterThan(0);
      for (const t of op.tags!) expect(described, `${key}: tag ${t}`).toContain(t);
    }
    expect(ids.get('createJob')).toBe('post /v1/jobs');
    expect(ids.get('fireHook')).toBe('post /hooks/{triggerId}');
    expect(ids.get('getConsole')).toBe('get /');
    expect(ids.get('getDocs')).toBe('get /docs');
  });

  it('gives every operation security: a bearer token, except the public routes, which say so with an empty list or their signature schemes', () => {
    for (const { key, op } of operations(doc)) {
      expect(op.security, key).toBeInstanceOf(Array);
      const schemes = op.security!.flatMap((r) => Object.keys(r));
      for (const s of schemes) expect(doc.components.securitySchemes, `${key}: ${s}`).toHaveProperty([s]);
      if (SIGNED.has(key)) expect(schemes.sort(), key).toEqual(['githubSignature', 'standardWebhooks']);
      else if (PUBLIC.has(key)) expect(op.security, key).toEqual([]);
      else expect(op.security, key).toEqual([{ bearer: [] }]);
    }
  });

  it('answers every documented 4xx and 5xx with the shared problem+json schema', () => {
    const problem = doc.components.schemas.Problem!;
    expect(problem.required).toEqual(expect.arrayContaining(['type', 'title', 'status', 'detail', 'errors']));
    for (const { key, op } of operations(doc)) {
      const errors = Object.keys(op.responses).filter((status) => /^[45]/.test(status));
      if (!PUBLIC.has(key)) expect(errors.length, `${key} documents no error`).toBeGreaterThan(0);
      for (const status of errors) {
        const content = op.responses[status]!.content ?? {};
        expect(Object.keys(content), `${key} ${status}`).toEqual(['application/problem+json']);
        expect(content['application/problem+json']!.schema?.$ref, `${key} ${status}`).toBe('#/components/schemas/Problem');
      }
    }
  });
});
