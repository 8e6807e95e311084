import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MAX_JSON_DEPTH } from '../../src/http/json-body.js';
import { problemOf, testGateway, type TestGateway } from '../fixtures.js';

/**
 * Request bodies a tenant crafts to slip past validation or to stall the gateway: each is a 400
 * naming the field (or the body), answered before anything is written.
 */

let g: TestGateway;
let token: string;
beforeEach(async () => {
  g = await testGateway();
  await g.tenant('acme');
  token = await g.token({ tenant: 'acme', scopes: ['jobs:read', 'jobs:write', 'functions:read', 'functions:write'] });
});
afterEach(() => g.close());

const post = (path: string, raw: BodyInit) => g.req('POST', path, { token, raw, headers: { 'content-type': 'application/json' } });
const jobCount = async () => ((await (await g.req('GET', '/v1/jobs', { token })).json()) as { jobs: unknown[] }).jobs.length;

async function refused(res: Response, field: string, message: RegExp) {
  expect(res.status).toBe(400);
  const p = await problemOf(res);
  expect(p.type).toBe('application/problem+json');
  expect(p.fields).toEqual([field]);
  expect(p.body.errors[0]!.message).toMatch(message);
}

describe('text is taken exactly as sent, or refused', () => {
  it('bytes that are not UTF-8 are 400 naming the body, not run as U+FFFD, and no job is written', async () => {
    const bad = [[0xff, 0xfe, 0xc3], [0xed, 0xa0, 0x80], [0xc0, 0xaf]]; // stray bytes, an encoded surrogate, an overlong '/'
    for (const bytes of bad) {
      const body = Buffer.concat([Buffer.from('{"command":"echo '), Buffer.from(bytes), Buffer.from('"}')]);
      await refused(await post('/v1/jobs', body), '(body)', /UTF-8/);
    }
    expect(await jobCount()).toBe(0);
  });

  it('an unpaired surrogate escape is 400 naming its field; a paired one is a character like any other', async () => {
    const cases: Array<[string, string]> = [
      ['{"command":"true","name":"x\\ud800y"}', 'name'],
      ['{"command":"echo \\udc00"}', 'command'],
      ['{"command":["echo","ok","\\ud83d"]}', 'command.2'],
      ['{"command":"true","env":{"A":"\\udfff"}}', 'env.A'],
      ['{"command":"true","env":{"B\\ud800":"v"}}', 'env.B\uFFFD'],
    ];
    for (const [body, field] of cases) await refused(await post('/v1/jobs', body), field, /surrogate/);
    expect(await jobCount()).toBe(0);
    const ok = await post('/v1/jobs', '{"command":"true","name":"smile-\\ud83d\\ude00"}');
    expect(ok.status).toBe(202);
    expect(((await ok.json()) as { name: string }).name).toBe('smile-😀');
    // A function's text fields go through the same gate.
    await refused(await g.req('PUT', '/v1/functions/f', { token, raw: '{"command":"true","description":"\\ud800"}', headers: { 'content-type': 'application/json' } }), 'description', /surrogate/);
  });

  it('an env name __proto__ is 400 naming it, whatever its value, instead of vanishing', async () => {
    for (const value of ['"b"', '{"A":"b"}', '1']) {
      await refused(await post('/v1/jobs', `{"command":"true","env":{"__proto__":${value}}}`), 'env.__proto__', /__proto__/);
      // Spelled with escapes, it is the same key.
      await refused(await post('/v1/jobs', `{"command":"true","env":{"\\u005f_proto__":${value}}}`), 'env.__proto__', /__proto__/);
    }
    expect(await jobCount()).toBe(0);
  });

  it('a function named "invoke" gets the same checks; only POST …/invoke takes raw bytes', async () => {
    const put = (body: string) => g.req('PUT', '/v1/functions/invoke', { token, raw: body, headers: { 'content-type': 'application/json' } });
    await refused(await put('{"command":"true","env":{"__proto__":{"A":"b"}}}'), 'env.__proto__', /__proto__/);
    await refused(await put('{"command":"true","description":"\\ud800"}'), 'description', /surrogate/);
    await refused(await put('['.repeat(1000)), '(body)', /deeper/);
    expect((await put('{"command":"cat"}')).status).toBe(201);
    // Its invoke takes any bytes as stdin, JSON or not.
    const invoked = await g.req('POST', '/v1/functions/invoke/invoke', { token, raw: Buffer.from([0xff, 0x5b, 0x5b]), headers: { 'content-type': 'application/octet-stream' } });
    expect(invoked.status).toBe(202);
  });
});

describe('a blank body with a JSON content type', () => {
  it('means no fields: a re-run and a trigger take their defaults, and a submit names the missing command', async () => {
    const job = (await (await post('/v1/jobs', '{"command":"true"}')).json()) as { id: string };
    for (const blank of ['', ' \r\n\t']) {
      const again = await post(`/v1/jobs/${job.id}/rerun`, blank);
      expect(again.status).toBe(202);
      await refused(await post('/v1/jobs', blank), 'command', /./);
    }
    expect((await g.req('PUT', '/v1/functions/f', { token, body: { command: 'cat' } })).status).toBe(201);
    expect((await post('/v1/functions/f/triggers', '')).status).toBe(201);
  });
});

describe('nesting is bounded before parsing', () => {
  it(`a body nested past ${MAX_JSON_DEPTH} levels is 400 naming the body; ${MAX_JSON_DEPTH} levels still reach validation`, async () => {
    const deep = '['.repeat(500_000) + ']'.repeat(500_000); // just under the 1 MiB body limit
    await refused(await post('/v1/jobs', deep), '(body)', new RegExp(`deeper than ${MAX_JSON_DEPTH}`));
    await refused(await post('/v1/jobs', `{"command":"true","env":{"A":${'['.repeat(200_000)}${']'.repeat(200_000)}}}`), '(body)', /deeper/);
    // Brackets inside strings are text, not nesting.
    const inString = await post('/v1/jobs', JSON.stringify({ command: `echo '${'[{'.repeat(10_000)}'` }));
    expect(inString.status).toBe(202);
    // At the limit the body parses, and validation names the field.
    const atLimit = `{"command":"true","env":{"A":${'['.repeat(MAX_JSON_DEPTH - 2)}${']'.repeat(MAX_JSON_DEPTH - 2)}}}`;
    const res = await post('/v1/jobs', atLimit);
    expect(res.status).toBe(400);
    expect((await problemOf(res)).fields).toEqual(['env.A']);
    // A trigger's optional body is held to the same bounds.
    expect((await g.req('PUT', '/v1/functions/f', { token, body: { command: 'true' } })).status).toBe(201);
    await refused(await post('/v1/functions/f/triggers', '['.repeat(1000)), '(body)', /deeper/);
  });
});

describe('numbers a cgroup cannot honour', () => {
  it('cpu below 0.01 (the smallest share enforced) is 400 naming cpu, for a job and as a quota', async () => {
    for (const cpu of [5e-324, 0.009]) await refused(await post('/v1/jobs', JSON.stringify({ command: 'true', cpu })), 'cpu', /at least 0.01/);
    expect((await post('/v1/jobs', JSON.stringify({ command: 'true', cpu: 0.01 }))).status).toBe(202);
    await refused(await g.req('POST', '/v1/tenants', { token: g.admin, body: { id: 'tiny', quota: { maxCpu: 5e-324 } } }), 'quota.maxCpu', /at least 0.01/);
  });
});

describe('races answer as the same requests one at a time do', () => {
  it('ten creates of one tenant at once: one 201, nine 409 naming id', async () => {
    const answers = await Promise.all(Array.from({ length: 10 }, () => g.req('POST', '/v1/tenants', { token: g.admin, body: { id: 'twin' } })));
    expect(answers.map((r) => r.status).sort()).toEqual([201, ...Array(9).fill(409)]);
    for (const r of answers.filter((x) => x.status === 409)) expect((await problemOf(r)).fields).toEqual(['id']);
  });

  it('triggers created while their function is deleted: 201 or 404 naming the function, never 500', async () => {
    const statuses = new Set<number>();
    for (let round = 0; round < 5; round++) {
      expect((await g.req('PUT', '/v1/functions/f', { token, body: { command: 'cat' } })).status).toBe(201);
      const [del, ...made] = await Promise.all([
        g.req('DELETE', '/v1/functions/f', { token }),
        ...Array.from({ length: 8 }, () => g.req('POST', '/v1/functions/f/triggers', { token, body: {} })),
      ]);
      expect(del!.status).toBe(204);
      for (const r of made) {
        statuses.add(r.status);
        if (r.status === 404) expect((await problemOf(r)).fields).toEqual(['name']);
      }
    }
    expect([...statuses].filter((s) => s !== 201 && s !== 404)).toEqual([]);
    expect(statuses).toContain(404);
  });
});

describe('methods', () => {
  it('a method a path does not take is 405 naming (method), with Allow listing those it does; an unknown path stays 404', async () => {
    const cases: Array<[string, string, string]> = [
      ['PUT', '/v1/jobs', 'GET, HEAD, POST'],
      ['PATCH', '/v1/jobs/job_01ABC', 'DELETE, GET, HEAD'],
      ['DELETE', '/v1/usage', 'GET, HEAD'],
      ['POST', '/metrics', 'GET, HEAD'],
    ];
    for (const [method, path, allow] of cases) {
      const res = await g.req(method, path, { token, raw: method === 'PUT' || method === 'PATCH' || method === 'POST' ? '{}' : undefined, headers: { 'content-type': 'application/json' } });
      expect(res.status, `${method} ${path}`).toBe(405);
      expect(res.headers.get('allow')).toBe(allow);
      expect((await problemOf(res)).fields).toEqual(['(method)']);
    }
    expect((await g.req('GET', '/v1/nothing-here', { token })).status).toBe(404);
    // The router is strict about a trailing slash, and so is the Allow list.
    expect((await g.req('PUT', '/v1/jobs/', { token, raw: '{}', headers: { 'content-type': 'application/json' } })).status).toBe(404);
    expect((await g.req('GET', '/v1/jobs/job_01ABC', { token })).status).toBe(404); // a route's own 404
    expect((await g.req('GET', '/docs/no-such-file.js')).status).toBe(404);
  });
});

describe('requests held open', () => {
  it('a tenant past its holds gets 429 for another follow and an answer at once for a wait; other tenants are not touched', async () => {
    await g.close();
    g = await testGateway({ CORRAL_MAX_HOLDS_PER_TENANT: '2' });
    const acme = await g.tenant('acme');
    const beta = await g.tenant('beta');
    // No agent: the jobs stay queued, so every follow and wait would hold until it ends.
    const job = (await (await g.req('POST', '/v1/jobs', { token: acme, body: { command: 'true' } })).json()) as { id: string };
    const other = (await (await g.req('POST', '/v1/jobs', { token: beta, body: { command: 'true' } })).json()) as { id: string };
    const follow = (t: string, id: string, signal?: AbortSignal) =>
      Promise.resolve(g.app.request(`/v1/jobs/${id}/output?follow=1`, { headers: { authorization: `Bearer ${t}` }, ...(signal && { signal }) }));
    const first = new AbortController();
    const held = [await follow(acme, job.id, first.signal), await follow(acme, job.id)];
    expect(held.map((r) => r.status)).toEqual([200, 200]);
    expect(g.s.holds.count('acme')).toBe(2);

    const refused = await follow(acme, job.id);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('5');
    expect((await problemOf(refused)).body.type).toBe('/problems/quota/holds');
    // A wait is answered as if it had run out (it would otherwise hold for a minute).
    const waited = await g.req('GET', `/v1/jobs/${job.id}?wait=60`, { token: acme });
    expect(waited.status).toBe(200);
    expect(((await waited.json()) as { state: string }).state).toBe('queued');
    // Another tenant follows as usual.
    expect((await follow(beta, other.id)).status).toBe(200);

    // A wait whose client has already gone takes no hold.
    const gone = g.s.waiters.wait('beta', other.id, 60_000, AbortSignal.abort());
    expect(g.s.holds.count('beta')).toBe(1); // the follow above, only
    expect(await gone).toBe(false);
    // A follow that ends gives its hold back.
    first.abort();
    await expect.poll(() => g.s.holds.count('acme')).toBe(1);
    expect((await follow(acme, job.id)).status).toBe(200);
  });
});
