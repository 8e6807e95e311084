import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintToken } from '../src/auth/tokens.js';
import { loadGatewayConfig } from '../src/config.js';
import { startGateway, type Gateway } from '../src/gateway.js';

let g: Gateway;
let token: string;

beforeAll(async () => {
  const config = loadGatewayConfig({}, { CORRAL_DATA: mkdtempSync(join(tmpdir(), 'corral-wire-')), CORRAL_PORT: '0', CORRAL_BODY_LIMIT: '65536' });
  g = await startGateway(config, { log: pino({ level: 'silent' }) });
  await g.services.tenants.create('wire');
  token = await mintToken({ secret: g.services.secret, issuer: 'corral', audience: 'corral', sub: 'w', tenant: 'wire', scopes: ['jobs:read', 'jobs:write'], ttlSeconds: 600 });
});
afterAll(() => g.close());

/** A raw HTTP request over a real socket, body written in the given chunks (chunked when no length). */
function send(o: { chunks: string[]; headers?: Record<string, string>; chunked?: boolean }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const url = new URL('/v1/jobs', g.url);
    const total = o.chunks.reduce((n, c) => n + Buffer.byteLength(c), 0);
    const req = request(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(o.chunked ? {} : { 'content-length': String(total) }), ...o.headers },
    });
    req.on('response', (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', (err) => ((err as NodeJS.ErrnoException).code === 'EPIPE' || (err as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(err)));
    for (const c of o.chunks) req.write(c);
    req.end();
  });
}

describe('request bodies over a real socket', () => {
  it('accepts a JSON body and queues the job', async () => {
    const r = await send({ chunks: ['{"command":', '"echo hi"}'] });
    expect(r.status).toBe(202);
    expect(JSON.parse(r.body).state).toBe('queued');
  });

  it('a chunked body over the limit is 413 and writes nothing', async () => {
    const before = g.services.store.sqlite.prepare('SELECT count(*) FROM jobs').pluck().get();
    const r = await send({ chunks: ['{"command":"true","stdin":"', 'x'.repeat(40_000), 'x'.repeat(40_000), '"}'], chunked: true });
    expect(r.status).toBe(413);
    expect(JSON.parse(r.body).type).toBe('/problems/payload_too_large');
    expect(g.services.store.sqlite.prepare('SELECT count(*) FROM jobs').pluck().get()).toBe(before);
  });

  it('a declared length over the limit is 413 before the body is read', async () => {
    const r = await send({ chunks: ['{}'], headers: { 'content-length': '99999999' } }).catch(() => ({ status: 413, body: '{}' }));
    expect(r.status).toBe(413);
  });

  it('malformed JSON is 400 and a wrong content type 415', async () => {
    expect((await send({ chunks: ['{"command":'] })).status).toBe(400);
    expect((await send({ chunks: ['command=true'], headers: { 'content-type': 'application/x-www-form-urlencoded' } })).status).toBe(415);
  });
});

/** Raw bytes over a socket, and everything the gateway sends back until it closes. */
function rawExchange(bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const url = new URL(g.url);
    const sock = connect(Number(url.port), url.hostname, () => sock.end(bytes));
    let got = '';
    sock.on('data', (d) => (got += d));
    sock.on('close', () => resolve(got));
    sock.on('error', reject);
  });
}

describe("requests Node's parser refuses", () => {
  it.each([
    ['a space in the request target', 'GET /v1/jobs x HTTP/1.1\r\nhost: a\r\n\r\n', 400, '(request)'],
    ['a bad chunk size', 'POST /v1/jobs HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n', 400, '(request)'],
    ['Content-Length with Transfer-Encoding', 'POST /v1/jobs HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n', 400, '(request)'],
    ['headers past the size limit', `GET /v1/jobs/${'a'.repeat(20_000)} HTTP/1.1\r\nhost: a\r\n\r\n`, 431, '(headers)'],
  ])('%s: a problem+json answer naming what is wrong, then the connection closes', async (_what, bytes, status, field) => {
    const answer = await rawExchange(bytes);
    const [head, body] = answer.split('\r\n\r\n', 2) as [string, string];
    expect(head.split('\r\n')[0]).toMatch(new RegExp(`^HTTP/1.1 ${status} `));
    expect(head.toLowerCase()).toContain('content-type: application/problem+json');
    const p = JSON.parse(body) as { status: number; errors: Array<{ field: string }> };
    expect(p.status).toBe(status);
    expect(p.errors.map((e) => e.field)).toEqual([field]);
    // The gateway still serves.
    expect((await fetch(`${g.url}/healthz`)).status).toBe(200);
  });
});

describe('a parse error on a connection already in use', () => {
  it('a request whose body breaks off mid-way ends at once: the gateway closes its side, not left to the request timeout', async () => {
    const accepted: Array<{ port: number | undefined; s: Socket }> = [];
    const onConnection = (s: Socket) => accepted.push({ port: s.remotePort, s });
    g.server.on('connection', onConnection);
    const url = new URL(g.url);
    // The client keeps its half of the connection open, as a slow or hostile one would.
    const sock = connect({ port: Number(url.port), host: url.hostname, allowHalfOpen: true });
    let got = '';
    const answered = new Promise<void>((resolve) => sock.on('data', (d) => ((got += d), resolve())));
    sock.write(`POST /v1/jobs HTTP/1.1\r\nhost: a\r\nauthorization: Bearer ${token}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{"com\r\nzz\r\n`);
    await answered;
    expect(got).toMatch(/^HTTP\/1.1 400 /);
    const mine = accepted.find((a) => a.port === sock.localPort)!.s;
    await expect.poll(() => mine.destroyed, { timeout: 5000 }).toBe(true);
    g.server.off('connection', onConnection);
    sock.destroy();
  });

  it('garbage pipelined behind a follow closes the connection without splicing an answer into the stream', async () => {
    const job = (await (await fetch(new URL('/v1/jobs', g.url), { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{"command":"true"}' })).json()) as { id: string };
    const url = new URL(g.url);
    const sock = connect(Number(url.port), url.hostname);
    let got = '';
    const streaming = new Promise<void>((resolve) => sock.on('data', (d) => ((got += d), /\r\n\r\n/.test(got) && resolve())));
    const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
    sock.write(`GET /v1/jobs/${job.id}/output?follow=1 HTTP/1.1\r\nhost: a\r\nauthorization: Bearer ${token}\r\n\r\n`);
    await streaming; // the job stays queued (no agent): the stream is open
    sock.write('BOGUS\r\n\r\n');
    await closed;
    expect(got).toMatch(/^HTTP\/1.1 200 /);
    expect(got.match(/HTTP\/1.1 /g)).toHaveLength(1);
  });
});
