import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadGatewayConfig } from '../src/config.js';
import { problemOf, testGateway, type TestGateway } from './fixtures.js';

let g: TestGateway;
afterEach(() => g?.close());

describe('tenants API', () => {
  it('creates, reads and updates a tenant with its quota', async () => {
    g = await testGateway();
    const created = await g.req('POST', '/v1/tenants', { token: g.admin, body: { id: 'acme', quota: { maxConcurrent: 3 } } });
    expect(created.status).toBe(201);
    expect((await created.json()).quota).toMatchObject({ maxConcurrent: 3, ratePerMinute: 600 });
    const patched = await g.req('PATCH', '/v1/tenants/acme', { token: g.admin, body: { quota: { maxCpu: 0.5 } } });
    expect((await patched.json()).quota).toMatchObject({ maxConcurrent: 3, maxCpu: 0.5 });
    const read = await (await g.req('GET', '/v1/tenants/acme', { token: g.admin })).json();
    expect(read.quota).toMatchObject({ maxConcurrent: 3, maxCpu: 0.5 });
  });

  it('answers duplicates 409, unknown tenants 404 and bad quotas 400 naming the field', async () => {
    g = await testGateway();
    await g.tenant('acme');
    expect((await g.req('POST', '/v1/tenants', { token: g.admin, body: { id: 'acme' } })).status).toBe(409);
    expect((await g.req('GET', '/v1/tenants/nope', { token: g.admin })).status).toBe(404);
    const bad = await g.req('PATCH', '/v1/tenants/acme', { token: g.admin, body: { quota: { maxConcurrent: -1, bogus: 1 } } });
    expect(bad.status).toBe(400);
    expect((await problemOf(bad)).fields).toEqual(expect.arrayContaining(['quota.maxConcurrent', 'quota.bogus']));
    const badId = await g.req('POST', '/v1/tenants', { token: g.admin, body: { id: 'Bad/Id' } });
    expect((await problemOf(badId)).fields).toEqual(['id']);
  });

  it('honours a tenant’s tokens only once the tenant exists', async () => {
    g = await testGateway();
    const early = await g.token({ tenant: 'late', scopes: ['jobs:read'] });
    expect((await g.req('GET', '/v1/jobs', { token: early })).status).toBe(401);
    await g.tenant('late');
    expect((await g.req('GET', '/v1/jobs', { token: early })).status).toBe(200);
  });
});

describe('operations', () => {
  it('serves /healthz without auth', async () => {
    g = await testGateway();
    const res = await g.req('GET', '/healthz');
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ ok: true });
  });

  it('serves Prometheus metrics to admins and the scrape token only', async () => {
    g = await testGateway({ CORRAL_METRICS_TOKEN: 'scrape-token-0123456789' });
    const t = await g.tenant('acme');
    await g.req('POST', '/v1/jobs', { token: t, body: { command: 'true' } });
    expect((await g.req('GET', '/metrics')).status).toBe(401);
    expect((await g.req('GET', '/metrics', { token: t })).status).toBe(403);
    const scraped = await g.req('GET', '/metrics', { headers: { authorization: 'Bearer scrape-token-0123456789' } });
    expect(scraped.status).toBe(200);
    const text = await (await g.req('GET', '/metrics', { token: g.admin })).text();
    expect(text).toMatch(/corral_jobs\{state="queued"\} 1/);
    expect(text).toMatch(/corral_queue_depth\{tenant="acme"\} 1/);
    expect(text).toMatch(/corral_http_request_duration_seconds_bucket\{.*route="\/v1\/jobs".*\}/);
  });

  it('publishes an OpenAPI document generated from the request schemas, and a docs page', async () => {
    g = await testGateway();
    const doc = await (await g.req('GET', '/openapi.json')).json();
    expect(doc.paths['/v1/jobs'].post.requestBody.content['application/json'].schema.$ref).toBe('#/components/schemas/JobRequest');
    expect(Object.keys(doc.components.schemas.JobRequest.properties)).toEqual(
      expect.arrayContaining(['command', 'image', 'timeout', 'retries', 'cpu', 'cpuset', 'memory', 'env', 'stdin', 'name', 'fresh', 'callbackUrl']),
    );
    expect(doc.paths['/v1/jobs/{id}/output']).toBeDefined();
    const docs = await g.req('GET', '/docs');
    expect(docs.status).toBe(200);
    expect(await docs.text()).toMatch(/openapi\.json/);
    const bundle = await g.req('GET', '/docs/swagger-ui-bundle.js');
    expect(bundle.status).toBe(200);
    expect((await bundle.text()).length).toBeGreaterThan(100_000);
  });

  it('every error is problem+json with a request id', async () => {
    g = await testGateway();
    const res = await g.req('GET', '/v1/jobs');
    const p = await problemOf(res);
    expect(p.type).toContain('application/problem+json');
    expect(p.body).toMatchObject({ type: '/problems/unauthorized', status: 401, title: 'Unauthorized' });
    expect(res.headers.get('x-request-id')).toBeTruthy();
  });
});

describe('configuration and JWKS', () => {
  it('parses flags over environment and rejects bad values', () => {
    const c = loadGatewayConfig({ port: '9000' }, { CORRAL_PORT: '8000', CORRAL_HOST: '0.0.0.0' });
    expect(c).toMatchObject({ port: 9000, host: '0.0.0.0', dataDir: './.corral', jwtIssuer: 'corral', jwtAudience: 'corral', sync: 'full' });
    expect(() => loadGatewayConfig({}, { CORRAL_PORT: '70000' })).toThrow(/CORRAL_PORT/);
  });

  it('accepts an external identity provider’s RS256 tokens from a JWKS file, and still refuses forged ones', async () => {
    const { publicKey, privateKey } = await generateKeyPair('RS256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
    const file = join(process.env.TMPDIR ?? '/tmp', `jwks-${process.pid}.json`);
    writeFileSync(file, JSON.stringify({ keys: [jwk] }));
    g = await testGateway({ CORRAL_JWKS: file });
    await g.tenant('acme');
    const idp = (key: CryptoKey | typeof privateKey) =>
      new SignJWT({ scope: 'jobs:read', tenant: 'acme' }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setSubject('alice').setIssuer('corral').setAudience('corral').setExpirationTime('5m').sign(key);
    expect((await g.req('GET', '/v1/jobs', { token: await idp(privateKey) })).status).toBe(200);
    const other = await generateKeyPair('RS256');
    expect((await g.req('GET', '/v1/jobs', { token: await idp(other.privateKey) })).status).toBe(401);
  });
});
