import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mintToken } from '../src/auth/tokens.js';
import type { Scope } from '../src/auth/principal.js';
import { loadGatewayConfig } from '../src/config.js';
import { createApp } from '../src/http/app.js';
import { buildServices, type BuildOptions, type Services } from '../src/services.js';
import type { Quota } from '../src/tenants/quota.js';

export const SECRET = 'test-secret-test-secret-test-secret-0123456789';

export interface TestGateway {
  s: Services;
  app: ReturnType<typeof createApp>;
  dir: string;
  admin: string;
  token(o: { tenant?: string; scopes: Scope[]; ttlSeconds?: number; sub?: string }): Promise<string>;
  /** Creates a tenant and returns a jobs:read+write token for it. */
  tenant(id: string, quota?: Partial<Quota>): Promise<string>;
  req(method: string, path: string, o?: { token?: string; body?: unknown; raw?: BodyInit; headers?: Record<string, string> }): Promise<Response>;
  close(): Promise<void>;
}

/** A gateway on a fresh data directory and database, driven in-process with `app.request()`. */
export async function testGateway(env: Record<string, string> = {}, o: BuildOptions = {}): Promise<TestGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'corral-test-'));
  const config = loadGatewayConfig({}, { CORRAL_DATA: dir, CORRAL_JWT_SECRET: SECRET, CORRAL_LOG_LEVEL: 'silent', ...env });
  const s = buildServices(config, o);
  const app = createApp(s);
  const token: TestGateway['token'] = (t) =>
    mintToken({ secret: s.secret, issuer: 'corral', audience: 'corral', sub: t.sub ?? 'test', scopes: t.scopes, ttlSeconds: t.ttlSeconds ?? 3600, ...(t.tenant && { tenant: t.tenant }) });
  const admin = await token({ scopes: ['admin'] });
  const req: TestGateway['req'] = (method, path, r = {}) => {
    const headers: Record<string, string> = { ...(r.token && { authorization: `Bearer ${r.token}` }) };
    let body: BodyInit | undefined = r.raw;
    if (r.body !== undefined) {
      body = JSON.stringify(r.body);
      headers['content-type'] = 'application/json';
    }
    return Promise.resolve(app.request(path, { method, headers: { ...headers, ...r.headers }, ...(body !== undefined && { body }) }));
  };
  return {
    s,
    app,
    dir,
    admin,
    token,
    async tenant(id, quota) {
      const res = await req('POST', '/v1/tenants', { token: admin, body: { id, ...(quota && { quota }) } });
      if (res.status !== 201) throw new Error(`tenant ${id}: ${res.status} ${await res.text()}`);
      return token({ tenant: id, scopes: ['jobs:read', 'jobs:write'] });
    },
    req,
    async close() {
      s.scheduler.stop();
      await s.store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Reads a problem+json answer and checks its shape. */
export async function problemOf(res: Response) {
  const type = res.headers.get('content-type') ?? '';
  const body = (await res.json()) as { type: string; title: string; status: number; detail: string; errors: Array<{ field: string; message: string }> };
  return { type, body, fields: body.errors.map((e) => e.field) };
}
