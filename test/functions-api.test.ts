import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MAX_INVOKE_STDIN_BYTES } from '../src/jobs/spec.js';
import { problemOf, testGateway, type TestGateway } from './fixtures.js';

/** Functions over HTTP, in-process: saving, versions, scopes, tenancy, validation, and what an invoke queues. */

let g: TestGateway;
let acme: string;

beforeEach(async () => {
  g = await testGateway();
  acme = await fnTenant('acme');
});
afterEach(() => g.close());

/** A tenant and a token with every job and function scope. */
async function fnTenant(id: string, quota?: Parameters<TestGateway['tenant']>[1]): Promise<string> {
  await g.tenant(id, quota);
  return g.token({ tenant: id, scopes: ['jobs:read', 'jobs:write', 'functions:read', 'functions:write'] });
}

const put = (name: string, body: unknown, token = acme) => g.req('PUT', `/v1/functions/${encodeURIComponent(name)}`, { token, body });
const get = (name: string, token = acme) => g.req('GET', `/v1/functions/${encodeURIComponent(name)}`, { token });
const invoke = (name: string, o: { token?: string; body?: BodyInit; query?: string; headers?: Record<string, string> } = {}) =>
  g.req('POST', `/v1/functions/${encodeURIComponent(name)}/invoke${o.query ?? ''}`, { token: o.token ?? acme, ...(o.body !== undefined && { raw: o.body }), ...(o.headers && { headers: o.headers }) });
/** The job as stored, spec included (the view leaves out binary stdin). */
/** The stored spec, with the stdin kept in its own column put back as the run frame carries it. */
const storedSpec = (id: string) => {
  const row = g.s.store.sqlite.prepare('SELECT spec, stdin FROM jobs WHERE id = ?').get(id) as { spec: string; stdin: Buffer | null };
  return { ...JSON.parse(row.spec), ...(row.stdin && { stdinBase64: row.stdin.toString('base64') }) };
};

describe('PUT /v1/functions/:name', () => {
  it('creates a function at version 1 with its defaults shown, and GET answers the same', async () => {
    const res = await put('resize', { command: 'convert - -resize 50% -', description: 'halves an image' });
    expect(res.status).toBe(201);
    const fn = await res.json();
    expect(fn).toMatchObject({
      name: 'resize',
      tenant: 'acme',
      version: 1,
      image: 'busybox',
      command: 'convert - -resize 50% -',
      timeout: null,
      retries: 0,
      cpu: null,
      cpuset: null,
      memory: null,
      env: {},
      maxConcurrent: null,
      contentType: 'text/plain; charset=utf-8',
      description: 'halves an image',
      callbackUrl: null,
    });
    expect(fn.createdAt).toBe(fn.updatedAt);
    expect(await (await get('resize')).json()).toEqual(fn);
  });

  it('grows the version by one on every change, keeps it when the same thing is saved again, and keeps createdAt', async () => {
    const v1 = await (await put('f', { command: 'echo 1', env: { A: '1', B: '2' } })).json();
    await new Promise((r) => setTimeout(r, 5));
    const v2res = await put('f', { command: 'echo 2', env: { A: '1', B: '2' } });
    expect(v2res.status).toBe(200);
    const v2 = await v2res.json();
    expect(v2.version).toBe(2);
    expect(v2.createdAt).toBe(v1.createdAt);
    expect(v2.updatedAt > v1.updatedAt).toBe(true);
    // The same body again (env in another key order) is not a change.
    const same = await (await put('f', { env: { B: '2', A: '1' }, command: 'echo 2' })).json();
    expect(same.version).toBe(2);
    expect(same.updatedAt).toBe(v2.updatedAt);
    // A replace, not a merge: what the body leaves out goes back to its default.
    const v3 = await (await put('f', { command: 'echo 2' })).json();
    expect(v3).toMatchObject({ version: 3, env: {} });
    // What GET answers can be sent back as it is, and is no change.
    const { name: _n, tenant: _t, version: _v, createdAt: _c, updatedAt: _u, ...body } = await (await get('f')).json();
    expect((await (await put('f', body)).json()).version).toBe(3);
  });

  it('keeps every field it is given', async () => {
    const body = {
      image: 'busybox',
      command: ['/bin/cat'],
      timeout: 12.5,
      retries: 2,
      cpuset: '0',
      memory: '64M',
      env: { GREETING: 'hi' },
      maxConcurrent: 3,
      contentType: 'application/json',
      description: 'line one\n\tline two',
      callbackUrl: 'https://example.org/done',
    };
    const fn = await (await put('all', body)).json();
    expect(fn).toMatchObject({ ...body, memory: 64 * 1024 ** 2, version: 1 });
  });

  it('takes Unicode names and finds them again', async () => {
    expect((await put('résumé-处理', { command: 'true' })).status).toBe(201);
    expect((await (await get('résumé-处理')).json()).name).toBe('résumé-处理');
    // Decoded once: "%41" stays the three characters it spells.
    expect((await g.req('PUT', '/v1/functions/%2541', { token: acme, body: { command: 'true' } })).status).toBe(201);
    expect((await (await g.req('GET', '/v1/functions/%2541', { token: acme })).json()).name).toBe('%41');
  });

  it.each([
    ['no command', {}, 'command'],
    ['an empty command', { command: '' }, 'command'],
    ['a command with NUL', { command: 'echo \0' }, 'command'],
    ['an image that is not a name', { command: 'true', image: 'Bad Image' }, 'image'],
    ['a zero timeout', { command: 'true', timeout: 0 }, 'timeout'],
    ['a timeout that is text', { command: 'true', timeout: '5' }, 'timeout'],
    ['retries past 10', { command: 'true', retries: 11 }, 'retries'],
    ['fractional retries', { command: 'true', retries: 1.5 }, 'retries'],
    ['a zero cpu', { command: 'true', cpu: 0 }, 'cpu'],
    ['cpu and cpuset both', { command: 'true', cpu: 1, cpuset: '0' }, 'cpuset'],
    ['a backwards cpuset', { command: 'true', cpuset: '3-1' }, 'cpuset'],
    ['memory that is not a size', { command: 'true', memory: 'lots' }, 'memory'],
    ['memory below 8M', { command: 'true', memory: '4M' }, 'memory'],
    ['an env name with a dash', { command: 'true', env: { 'A-B': 'x' } }, 'env'],
    ['an env value that is not text', { command: 'true', env: { A: 1 } }, 'env'],
    ['an env name corral sets itself', { command: 'true', env: { CORRAL_QUERY: 'x' } }, 'env'],
    ['a zero maxConcurrent', { command: 'true', maxConcurrent: 0 }, 'maxConcurrent'],
    ['a fractional maxConcurrent', { command: 'true', maxConcurrent: 1.5 }, 'maxConcurrent'],
    ['a content type that splits headers', { command: 'true', contentType: 'text/plain\r\nSet-Cookie: a=b' }, 'contentType'],
    ['a content type that is no media type', { command: 'true', contentType: 'plain' }, 'contentType'],
    ['a description of 2000 characters', { command: 'true', description: 'x'.repeat(2000) }, 'description'],
    ['a description with an escape character', { command: 'true', description: 'a\x1b[2Jb' }, 'description'],
    ['an ftp callbackUrl', { command: 'true', callbackUrl: 'ftp://example.org/' }, 'callbackUrl'],
    ['a field functions do not have', { command: 'true', stdin: 'x' }, 'stdin'],
    ['a body that is an array', [], '(body)'],
  ])('refuses %s with 400 naming the field', async (_name, body, field) => {
    const res = await put('bad', body);
    expect(res.status).toBe(400);
    const p = await problemOf(res);
    expect(p.type).toBe('application/problem+json');
    expect(p.fields.some((f) => f === field || f.startsWith(`${field}.`))).toBe(true);
    expect((await get('bad')).status).toBe(404);
  });

  it.each([
    ['a timeout over the tenant maximum', { command: 'true', timeout: 7200 }, 'timeout'],
    ['memory over the tenant maximum', { command: 'true', memory: '2G' }, 'memory'],
    ['cpu over the tenant maximum', { command: 'true', cpu: 4 }, 'cpu'],
    ['a cpuset naming more CPUs than the tenant may use', { command: 'true', cpuset: '0-3' }, 'cpuset'],
    ['an image no agent offers', { command: 'true', image: 'nosuchimage' }, 'image'],
    ['maxConcurrent over the tenant maximum', { command: 'true', maxConcurrent: 11 }, 'maxConcurrent'],
    ['credentials in callbackUrl', { command: 'true', callbackUrl: 'https://u:p@example.org/' }, 'callbackUrl'],
  ])('refuses a function that could never run — %s — with 422 naming the field', async (_name, body, field) => {
    const res = await put('never', body);
    expect(res.status).toBe(422);
    expect((await problemOf(res)).fields).toEqual([field]);
    expect((await get('never')).status).toBe(404);
  });

  it.each([
    ['a slash, encoded', 'a%2Fb'],
    ['a control character', 'a%0Ab'],
    ['leading whitespace', '%20a'],
    ['the shape of a job id', 'job_01J0000000000000000000000Z'],
    ['201 characters', 'n'.repeat(201)],
  ])('refuses a name with %s with 400 naming it', async (_name, raw) => {
    const res = await g.req('PUT', `/v1/functions/${raw}`, { token: acme, body: { command: 'true' } });
    expect(res.status).toBe(400);
    expect((await problemOf(res)).fields).toEqual(['name']);
  });

  it('refuses a body that is not JSON: 415 for another type, 400 for broken JSON', async () => {
    const other = await g.req('PUT', '/v1/functions/x', { token: acme, raw: 'command=true', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect(other.status).toBe(415);
    const broken = await g.req('PUT', '/v1/functions/x', { token: acme, raw: '{"command":', headers: { 'content-type': 'application/json' } });
    expect(broken.status).toBe(400);
    expect((await problemOf(broken)).fields).toEqual(['(body)']);
  });
});

describe('GET and DELETE /v1/functions', () => {
  it('lists by name with cursor paging', async () => {
    for (const n of ['e', 'b', 'd', 'a', 'c']) await put(n, { command: 'true' });
    const first = await (await g.req('GET', '/v1/functions?limit=2', { token: acme })).json();
    expect(first.functions.map((f: { name: string }) => f.name)).toEqual(['a', 'b']);
    expect(first.nextCursor).toBe('b');
    const second = await (await g.req('GET', `/v1/functions?limit=2&cursor=${first.nextCursor}`, { token: acme })).json();
    expect(second.functions.map((f: { name: string }) => f.name)).toEqual(['c', 'd']);
    const last = await (await g.req('GET', `/v1/functions?limit=2&cursor=${second.nextCursor}`, { token: acme })).json();
    expect(last).toMatchObject({ functions: [{ name: 'e' }], nextCursor: null });
    const bad = await g.req('GET', '/v1/functions?limit=0', { token: acme });
    expect(bad.status).toBe(400);
    expect((await problemOf(bad)).fields).toEqual(['limit']);
  });

  it('deletes a function (204), after which it is 404; its jobs stay', async () => {
    await put('gone', { command: 'true' });
    const job = await (await invoke('gone')).json();
    expect((await g.req('DELETE', '/v1/functions/gone', { token: acme })).status).toBe(204);
    expect((await get('gone')).status).toBe(404);
    expect((await g.req('DELETE', '/v1/functions/gone', { token: acme })).status).toBe(404);
    expect((await invoke('gone')).status).toBe(404);
    const kept = await (await g.req('GET', `/v1/jobs/${job.id}`, { token: acme })).json();
    expect(kept).toMatchObject({ id: job.id, function: 'gone', functionVersion: 1 });
  });
});

describe('tenancy and scopes', () => {
  it("answers 404 for another tenant's function on every route, and a same-named function there is its own", async () => {
    await put('shared-name', { command: 'echo acme' });
    const other = await fnTenant('other');
    expect((await get('shared-name', other)).status).toBe(404);
    expect((await g.req('DELETE', '/v1/functions/shared-name', { token: other })).status).toBe(404);
    const inv = await invoke('shared-name', { token: other });
    expect(inv.status).toBe(404);
    expect((await problemOf(inv)).fields).toEqual(['name']);
    expect((await (await g.req('GET', '/v1/functions', { token: other })).json()).functions).toEqual([]);
    const theirs = await put('shared-name', { command: 'echo other' }, other);
    expect(theirs.status).toBe(201);
    expect((await theirs.json()).version).toBe(1);
    expect(await (await get('shared-name')).json()).toMatchObject({ command: 'echo acme', version: 1, tenant: 'acme' });
  });

  it('needs functions:read to read, functions:write to change, and functions:write or jobs:write to invoke', async () => {
    await put('guarded', { command: 'true' });
    const jobsOnly = await g.token({ tenant: 'acme', scopes: ['jobs:read', 'jobs:write'] });
    const readOnly = await g.token({ tenant: 'acme', scopes: ['functions:read'] });
    const writeOnly = await g.token({ tenant: 'acme', scopes: ['functions:write'] });
    expect((await get('guarded', jobsOnly)).status).toBe(403);
    expect((await g.req('GET', '/v1/functions', { token: jobsOnly })).status).toBe(403);
    expect((await put('guarded', { command: 'false' }, jobsOnly)).status).toBe(403);
    expect((await put('guarded', { command: 'false' }, readOnly)).status).toBe(403);
    expect((await g.req('DELETE', '/v1/functions/guarded', { token: readOnly })).status).toBe(403);
    expect((await invoke('guarded', { token: readOnly })).status).toBe(403);
    expect((await get('guarded', readOnly)).status).toBe(200);
    expect((await invoke('guarded', { token: jobsOnly })).status).toBe(202);
    expect((await invoke('guarded', { token: writeOnly })).status).toBe(202);
    // An admin token has no tenant: it owns no functions.
    const admin = await g.token({ scopes: ['admin', 'functions:read'] });
    expect((await get('guarded', admin)).status).toBe(403);
    expect((await g.req('GET', '/v1/functions/guarded')).status).toBe(401);
    expect(await (await get('guarded')).json()).toMatchObject({ command: 'true', version: 1 });
  });
});

describe('POST /v1/functions/:name/invoke (queueing)', () => {
  it('answers 202 with the job, a Location, and the function copied into it with the raw body as binary stdin', async () => {
    await put('cat', { command: 'cat', env: { MODE: 'fast' }, timeout: 20, memory: '128M' });
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const res = await invoke('cat', { body: bytes, query: '?x=1&wait=0&y=a%20b&timeout=5&memory=64M', headers: { 'content-type': 'application/octet-stream' } });
    expect(res.status).toBe(202);
    expect(res.headers.get('location')).toMatch(/^\/v1\/jobs\/job_[0-9A-Z]{26}$/);
    const job = await res.json();
    expect(job).toMatchObject({
      function: 'cat',
      functionVersion: 1,
      state: 'queued',
      command: 'cat',
      timeout: 5,
      memory: 64 * 1024 ** 2,
      env: { MODE: 'fast', CORRAL_CONTENT_TYPE: 'application/octet-stream', CORRAL_QUERY: 'x=1&y=a%20b' },
    });
    expect(res.headers.get('location')).toBe(`/v1/jobs/${job.id}`);
    expect(job).not.toHaveProperty('stdinBase64');
    const spec = storedSpec(job.id);
    expect(Buffer.from(spec.stdinBase64, 'base64').equals(bytes)).toBe(true);
    expect(spec.stdin).toBeUndefined();
  });

  it('an empty body gives no stdin, and no content type an empty CORRAL_CONTENT_TYPE', async () => {
    await put('noop', { command: 'true' });
    const job = await (await invoke('noop')).json();
    expect(job.env).toEqual({ CORRAL_CONTENT_TYPE: '', CORRAL_QUERY: '' });
    expect(storedSpec(job.id).stdinBase64).toBeUndefined();
  });

  it("an edit after queueing does not change the queued job; the next invoke gets the new version", async () => {
    await put('evolve', { command: 'echo one', env: { V: '1' } });
    const first = await (await invoke('evolve')).json();
    await put('evolve', { command: 'echo two', env: { V: '2' }, timeout: 5 });
    const queued = await (await g.req('GET', `/v1/jobs/${first.id}`, { token: acme })).json();
    expect(queued).toMatchObject({ state: 'queued', command: 'echo one', env: { V: '1' }, timeout: 60, function: 'evolve', functionVersion: 1 });
    expect(storedSpec(first.id)).toMatchObject({ command: 'echo one', env: { V: '1' }, timeout: 60 });
    const second = await (await invoke('evolve')).json();
    expect(second).toMatchObject({ command: 'echo two', env: { V: '2' }, timeout: 5, functionVersion: 2 });
  });

  it('overrides may lower the limits: over the function (or the tenant) is 422 naming the parameter, a bad value 400', async () => {
    const small = await fnTenant('small', { maxTimeoutSeconds: 30, maxMemoryBytes: 512 * 1024 ** 2 });
    await put('bounded', { command: 'true', timeout: 10, memory: '128M' });
    await put('defaults', { command: 'true' }, small);
    const cases: Array<[string, string, number, string, string?]> = [
      ['bounded', '?timeout=11', 422, 'timeout'],
      ['bounded', '?memory=256M', 422, 'memory'],
      ['bounded', '?timeout=abc', 400, 'timeout'],
      ['bounded', '?timeout=0', 400, 'timeout'],
      ['bounded', '?memory=lots', 400, 'memory'],
      ['bounded', '?memory=1M', 400, 'memory'],
      ['bounded', '?wait=61', 400, 'wait'],
      ['bounded', '?wait=-1', 400, 'wait'],
      // Without its own limits a function's are the job defaults within the tenant's: 30 s, 256M.
      ['defaults', '?timeout=31', 422, 'timeout', small],
      ['defaults', '?memory=300M', 422, 'memory', small],
    ];
    for (const [name, query, status, field, token] of cases) {
      const res = await invoke(name, { query, ...(token && { token }) });
      expect(res.status, `${name}${query}`).toBe(status);
      expect((await problemOf(res)).fields, `${name}${query}`).toEqual([field]);
    }
    expect((await (await invoke('defaults', { query: '?timeout=30&memory=256M', token: small })).json()).timeout).toBe(30);
    expect((await (await g.req('GET', '/v1/jobs', { token: acme })).json()).jobs).toEqual([]);
  });

  it('honours Idempotency-Key: the same call gives the same job, another body or query with the key is 422', async () => {
    await put('once', { command: 'cat' });
    const key = { 'idempotency-key': 'call-1' };
    const a = await invoke('once', { body: 'payload', query: '?p=1', headers: key });
    const b = await invoke('once', { body: 'payload', query: '?p=1', headers: key });
    expect(a.status).toBe(202);
    expect(b.status).toBe(202);
    expect((await b.json()).id).toBe((await a.json()).id);
    expect((await (await g.req('GET', '/v1/jobs', { token: acme })).json()).jobs).toHaveLength(1);
    for (const other of [{ body: 'payloaD', query: '?p=1' }, { body: 'payload', query: '?p=2' }]) {
      const res = await invoke('once', { ...other, headers: key });
      expect(res.status).toBe(422);
      expect((await problemOf(res)).fields).toEqual(['Idempotency-Key']);
    }
  });

  it('counts against the tenant like any job: maxQueued is a 429 with Retry-After', async () => {
    const tight = await fnTenant('tight', { maxQueued: 1 });
    await put('q', { command: 'true' }, tight);
    expect((await invoke('q', { token: tight })).status).toBe(202);
    const res = await invoke('q', { token: tight });
    expect(res.status).toBe(429);
    expect(res.headers.get('retry-after')).toBeTruthy();
    expect((await problemOf(res)).fields).toEqual(['maxQueued']);
  });

  it('bounds the input: past the body limit is 413, a query string past 4 KiB is 400 naming query', async () => {
    await put('big', { command: 'cat' });
    const over = await invoke('big', { body: Buffer.alloc(1024 * 1024 + 1) });
    expect(over.status).toBe(413);
    expect((await problemOf(over)).fields).toEqual(['(body)']);
    const long = await invoke('big', { query: `?q=${'x'.repeat(5000)}` });
    expect(long.status).toBe(400);
    expect((await problemOf(long)).fields).toEqual(['query']);
  });

  it('caps the input at 1 MiB even when the gateway body limit is raised', async () => {
    await g.close();
    g = await testGateway({ CORRAL_BODY_LIMIT: String(8 * 1024 * 1024) });
    acme = await fnTenant('acme');
    await put('big', { command: 'cat' });
    expect((await invoke('big', { body: Buffer.alloc(MAX_INVOKE_STDIN_BYTES) })).status).toBe(202);
    const over = await invoke('big', { body: Buffer.alloc(MAX_INVOKE_STDIN_BYTES + 1) });
    expect(over.status).toBe(413);
    expect((await problemOf(over)).fields).toEqual(['(body)']);
  });
});

describe('OpenAPI', () => {
  it('documents every function route', async () => {
    const doc = await (await g.req('GET', '/openapi.json')).json();
    expect(Object.keys(doc.paths['/v1/functions'])).toEqual(['get']);
    expect(Object.keys(doc.paths['/v1/functions/{name}']).sort()).toEqual(['delete', 'get', 'put']);
    expect(Object.keys(doc.paths['/v1/functions/{name}/invoke'])).toEqual(['post']);
    expect(doc.components.schemas).toHaveProperty('Function');
    expect(doc.components.schemas).toHaveProperty('FunctionRequest');
    expect(doc.components.schemas).toHaveProperty('JobWithOutput');
  });
});
