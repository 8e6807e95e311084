import { SignJWT, UnsecuredJWT, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SECRET, testGateway, type TestGateway } from './fixtures.js';

let g: TestGateway;
let acme: string;
let readOnly: string;
let victimJob: string;

beforeAll(async () => {
  g = await testGateway();
  acme = await g.tenant('acme');
  const other = await g.tenant('other');
  readOnly = await g.token({ tenant: 'acme', scopes: ['jobs:read'] });
  const res = await g.req('POST', '/v1/jobs', { token: other, body: { command: 'true', name: 'victim' } });
  victimJob = (await res.json()).id;
});
afterAll(() => g.close());

const enc = new TextEncoder();
const sign = (claims: Record<string, unknown>, o: { secret?: string; exp?: number | string; iss?: string; aud?: string; alg?: string } = {}) =>
  new SignJWT({ scope: 'jobs:read jobs:write', tenant: 'acme', ...claims })
    .setProtectedHeader({ alg: o.alg ?? 'HS256' })
    .setSubject('mallory')
    .setIssuer(o.iss ?? 'corral')
    .setAudience(o.aud ?? 'corral')
    .setExpirationTime(o.exp ?? '1h')
    .sign(enc.encode(o.secret ?? SECRET));

/** Hostile tokens: each must be answered 401 (or 403 for a valid token lacking the scope). */
const badTokens: Array<[string, () => Promise<string | undefined>, number]> = [
  ['no token at all', async () => undefined, 401],
  ['garbage', async () => 'not-a-jwt', 401],
  ['unsigned alg:none', async () => new UnsecuredJWT({ scope: 'admin jobs:read jobs:write', tenant: 'acme' }).setSubject('x').setIssuer('corral').setAudience('corral').setExpirationTime('1h').encode(), 401],
  ['alg none with an empty signature forged from a real one', async () => {
    const real = await g.token({ tenant: 'acme', scopes: ['jobs:read'] });
    const [, payload] = real.split('.');
    return `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${payload}.`;
  }, 401],
  ['signed with another secret', () => sign({}, { secret: 'another-secret-another-secret-another-secret' }), 401],
  ['expired', () => sign({}, { exp: Math.floor(Date.now() / 1000) - 60 }), 401],
  ['wrong audience', () => sign({}, { aud: 'someone-else' }), 401],
  ['wrong issuer', () => sign({}, { iss: 'evil' }), 401],
  ['HS512 instead of the pinned HS256', () => sign({}, { alg: 'HS512' }), 401],
  ['RS256 with no JWKS configured', async () => {
    const { privateKey } = await generateKeyPair('RS256');
    return new SignJWT({ scope: 'jobs:read', tenant: 'acme' }).setProtectedHeader({ alg: 'RS256' }).setSubject('x').setIssuer('corral').setAudience('corral').setExpirationTime('1h').sign(privateKey);
  }, 401],
  ['tampered payload (tenant swapped to other)', async () => {
    const real = await g.token({ tenant: 'acme', scopes: ['jobs:read'] });
    const [h, p, s] = real.split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString());
    claims.tenant = 'other';
    return `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
  }, 401],
  ['no exp claim', () => new SignJWT({ scope: 'jobs:read', tenant: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setSubject('x').setIssuer('corral').setAudience('corral').sign(enc.encode(SECRET)), 401],
  ['unknown scope', () => sign({ scope: 'jobs:read root' }), 401],
  ['tenant that does not exist', () => sign({ tenant: 'ghost' }), 401],
  ['tenant claim of the wrong type', () => sign({ tenant: 42 }), 401],
  ['a 20 KB token', async () => 'a'.repeat(20_000), 401],
  ['read-only token writing', async () => readOnly, 403],
  ['agent token calling the jobs API', () => g.token({ scopes: ['agent'] }), 403],
  ['admin token without tenant calling the jobs API', async () => g.admin, 403],
];

describe('hostile tokens are refused on POST /v1/jobs', () => {
  it.each(badTokens)('%s', async (_name, make, status) => {
    const token = await make();
    const res = await g.req('POST', '/v1/jobs', { ...(token && { token }), body: { command: 'true' } });
    expect(res.status).toBe(status);
    expect(res.headers.get('content-type')).toContain('application/problem+json');
  });
});

it('tenant tokens cannot manage tenants', async () => {
  const res = await g.req('POST', '/v1/tenants', { token: acme, body: { id: 'mine' } });
  expect(res.status).toBe(403);
  expect((await g.req('GET', '/v1/tenants/other', { token: acme })).status).toBe(403);
});

it("tenant A reading B's job by id and by name gets 404", async () => {
  expect((await g.req('GET', `/v1/jobs/${victimJob}`, { token: acme })).status).toBe(404);
  expect((await g.req('GET', '/v1/jobs/victim', { token: acme })).status).toBe(404);
});

/** Hostile bodies: every one is a 4xx naming the field; none is a 5xx and none writes a job. */
const big = (n: number) => 'x'.repeat(n);
const badBodies: Array<[string, unknown, string, number?]> = [
  ['empty command', { command: '' }, 'command'],
  ['blank command', { command: '   ' }, 'command'],
  ['missing command', { image: 'busybox' }, 'command'],
  ['command of the wrong type', { command: 42 }, 'command'],
  ['command with NUL', { command: 'echo a\u0000b' }, 'command'],
  ['empty argv', { command: [] }, 'command'],
  ['argv with a number', { command: ['echo', 1] }, 'command'],
  ['argv[0] empty', { command: [''] }, 'command'],
  ['100 KB command', { command: big(100_000) }, 'command'],
  ['negative timeout', { command: 'true', timeout: -1 }, 'timeout'],
  ['zero timeout', { command: 'true', timeout: 0 }, 'timeout'],
  ['huge timeout', { command: 'true', timeout: 1e12 }, 'timeout'],
  ['timeout as a string', { command: 'true', timeout: '10' }, 'timeout'],
  ['retries 11', { command: 'true', retries: 11 }, 'retries'],
  ['retries 1.5', { command: 'true', retries: 1.5 }, 'retries'],
  ['retries -1', { command: 'true', retries: -1 }, 'retries'],
  ['cpu 0', { command: 'true', cpu: 0 }, 'cpu'],
  ['cpu negative', { command: 'true', cpu: -2 }, 'cpu'],
  ['cpu and cpuset together', { command: 'true', cpu: 1, cpuset: '0' }, 'cpuset'],
  ['cpuset garbage', { command: 'true', cpuset: '0-1; rm -rf /' }, 'cpuset'],
  ['memory garbage', { command: 'true', memory: 'lots' }, 'memory'],
  ['memory negative', { command: 'true', memory: -5 }, 'memory'],
  ['memory too small', { command: 'true', memory: '1K' }, 'memory'],
  ['memory absurd', { command: 'true', memory: '999999T' }, 'memory'],
  ['memory fractional bytes', { command: 'true', memory: 1.5 }, 'memory'],
  ['env not an object', { command: 'true', env: 'A=1' }, 'env'],
  ['env bad name', { command: 'true', env: { 'A-B': '1' } }, 'env.A-B'],
  ['env value not a string', { command: 'true', env: { A: 1 } }, 'env.A'],
  ['env value with NUL', { command: 'true', env: { A: 'a\u0000' } }, 'env.A'],
  ['oversized env', { command: 'true', env: Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`K${i}`, 'v'])) }, 'env'],
  ['oversized stdin', { command: 'true', stdin: big(300_000) }, 'stdin'],
  ['10 KB name', { command: 'true', name: big(10_000) }, 'name'],
  ['name with /', { command: 'true', name: 'a/b' }, 'name'],
  ['name with NUL', { command: 'true', name: 'a\u0000b' }, 'name'],
  ['name with newline', { command: 'true', name: 'a\nb' }, 'name'],
  ['name that looks like a job id', { command: 'true', name: 'job_01ARZ3NDEKTSV4RRFFQ69G5FAV' }, 'name'],
  ['empty name', { command: 'true', name: '' }, 'name'],
  ['fresh not a boolean', { command: 'true', fresh: 'yes' }, 'fresh'],
  ['image with path traversal', { command: 'true', image: '../../etc' }, 'image'],
  ['image uppercase', { command: 'true', image: 'BusyBox' }, 'image'],
  ['callbackUrl not a URL', { command: 'true', callbackUrl: 'not a url' }, 'callbackUrl'],
  ['callbackUrl with file scheme', { command: 'true', callbackUrl: 'file:///etc/passwd' }, 'callbackUrl'],
  ['unknown field', { command: 'true', privileged: true }, 'privileged'],
  ['body is an array', [{ command: 'true' }], '(body)'],
  ['body is null', null, '(body)'],
  ['body is a string', 'echo hi', '(body)'],
  ['NaN smuggled as a string number', { command: 'true', timeout: 'NaN' }, 'timeout'],
  ['prototype pollution attempt', JSON.parse('{"command":"true","__proto__":{"admin":true}}'), '__proto__'],
];

describe('hostile bodies on POST /v1/jobs', () => {
  it.each(badBodies)('%s → 4xx naming the field', async (_name, body, field) => {
    const before = g.s.store.sqlite.prepare('SELECT count(*) FROM jobs').pluck().get();
    const res = await g.req('POST', '/v1/jobs', { token: acme, body });
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(res.headers.get('content-type')).toContain('application/problem+json');
    const problem = await res.json();
    expect(problem.errors.map((e: { field: string }) => e.field)).toContain(field);
    expect(g.s.store.sqlite.prepare('SELECT count(*) FROM jobs').pluck().get()).toBe(before);
  });
});

describe('hostile transport', () => {
  it('malformed JSON → 400', async () => {
    const res = await g.req('POST', '/v1/jobs', { token: acme, raw: '{"command":', headers: { 'content-type': 'application/json' } });
    expect(res.status).toBe(400);
  });

  it('wrong content type → 415 naming content-type', async () => {
    const res = await g.req('POST', '/v1/jobs', { token: acme, raw: 'command=true', headers: { 'content-type': 'text/plain' } });
    expect(res.status).toBe(415);
    expect((await res.json()).errors[0].field).toBe('content-type');
  });

  it('a body over the limit → 413, also when sent chunked without a length', async () => {
    const body = JSON.stringify({ command: 'true', stdin: big(2 * 1024 * 1024) });
    const res = await g.req('POST', '/v1/jobs', { token: acme, raw: body, headers: { 'content-type': 'application/json' } });
    expect(res.status).toBe(413);
    const stream = new ReadableStream({
      start(c) {
        for (let i = 0; i < 40; i++) c.enqueue(new TextEncoder().encode(big(64 * 1024)));
        c.close();
      },
    });
    const chunked = await g.app.request('/v1/jobs', {
      method: 'POST',
      headers: { authorization: `Bearer ${acme}`, 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
      body: stream,
      // @ts-expect-error Node's fetch needs duplex for a streamed body
      duplex: 'half',
    });
    expect(chunked.status).toBe(413);
  });

  it('bad query values → 400 naming them', async () => {
    for (const [path, field] of [
      ['/v1/jobs?wait=abc', 'wait'],
      ['/v1/jobs?wait=-1', 'wait'],
      ['/v1/jobs?wait=61', 'wait'],
    ] as const) {
      const res = await g.req('POST', path, { token: acme, body: { command: 'true' } });
      expect(res.status, path).toBe(400);
      expect((await res.json()).errors[0].field).toBe(field);
    }
    for (const [path, field] of [
      ['/v1/jobs?limit=0', 'limit'],
      ['/v1/jobs?limit=100000', 'limit'],
      ['/v1/jobs?state=exploded', 'state'],
      ['/v1/jobs?cursor=../../x', 'cursor'],
      ['/v1/jobs/x/output?stream=both', 'stream'],
    ] as const) {
      const res = await g.req('GET', path, { token: acme });
      expect(res.status, path).toBe(400);
      expect((await res.json()).errors[0].field).toBe(field);
    }
  });

  it('a bad Idempotency-Key → 400 naming it', async () => {
    const res = await g.req('POST', '/v1/jobs', { token: acme, body: { command: 'true' }, headers: { 'idempotency-key': big(300) } });
    expect(res.status).toBe(400);
    expect((await res.json()).errors[0].field).toBe('idempotency-key');
  });

  it('unknown routes and ids answer 404 problem+json', async () => {
    expect((await g.req('GET', '/v1/nothing', { token: acme })).status).toBe(404);
    const res = await g.req('GET', `/v1/jobs/${encodeURIComponent('a\u0000b')}`, { token: acme });
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toContain('application/problem+json');
  });
});
