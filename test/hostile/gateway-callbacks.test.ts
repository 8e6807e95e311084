import { createServer, type Server } from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { newDeliverer } from '../../src/callbacks/index.js';
import { isPublicAddress, type Resolver } from '../../src/callbacks/target.js';
import { problemOf, testGateway, type TestGateway } from '../fixtures.js';

/** Callbacks cannot reach inside: every spelling of a private address, rebinding and redirects fail closed. */

let receiver: Server;
let port: number;
let hits: string[] = [];
let g: TestGateway | undefined;

beforeAll(async () => {
  receiver = createServer((req, res) => {
    hits.push(`${req.method} ${req.headers.host} ${req.url}`);
    req.resume();
    if (req.url === '/redirect') {
      res.writeHead(302, { location: `http://127.0.0.1:${port}/landed` }).end();
      return;
    }
    res.end('ok');
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
  port = (receiver.address() as { port: number }).port;
});
afterAll(() => new Promise<void>((r) => receiver.close(() => r())));
afterEach(async () => {
  hits = [];
  await g?.close();
  g = undefined;
});

/** Submits a job with `callbackUrl`, ends it, and waits for the delivery to finish. */
async function endWithCallback(gw: TestGateway, callbackUrl: string): Promise<void> {
  const token = await gw.tenant(`t${Math.random().toString(36).slice(2, 8)}`);
  const res = await gw.req('POST', '/v1/jobs', { token, body: { command: 'true', callbackUrl } });
  expect(res.status).toBe(202);
  const id = (await res.json()).id as string;
  const c = gw.s.machine.claim(id, 'a1')!;
  gw.s.machine.finish(id, c.fence, { exitCode: 0, signal: null, reason: 'exit' });
  // Tries every delivery that is due, and waits for those tries to end.
  await gw.s.callbacks.deliverer.runOnce();
}

/** Replaces the gateway's callback deliverer with one using `resolve` and quick timeouts. */
function withResolver(gw: TestGateway, resolve: Resolver, allowPrivate = false): void {
  gw.s.callbacks.deliverer = newDeliverer({ ...gw.s, ...gw.s.callbacks, allowPrivate }, { resolve, timeoutMs: 500 });
}

describe('callbacks reach only public addresses', () => {
  it('a loopback receiver is reached when private targets are allowed (the control)', async () => {
    g = await testGateway({ CORRAL_CALLBACK_PRIVATE: 'true' });
    await endWithCallback(g, `http://127.0.0.1:${port}/done`);
    expect(hits).toEqual([`POST 127.0.0.1:${port} /done`]);
  });

  it.each([
    ['dotted loopback', (p: number) => `http://127.0.0.1:${p}/`],
    ['localhost', (p: number) => `http://localhost:${p}/`],
    ['octal', (p: number) => `http://0177.0.0.1:${p}/`],
    ['hex', (p: number) => `http://0x7f000001:${p}/`],
    ['a single decimal number', (p: number) => `http://2130706433:${p}/`],
    ['short form 127.1', (p: number) => `http://127.1:${p}/`],
    ['IPv4-mapped IPv6', (p: number) => `http://[::ffff:127.0.0.1]:${p}/`],
    ['IPv4-mapped IPv6 in hex', (p: number) => `http://[::ffff:7f00:1]:${p}/`],
    ['0.0.0.0', (p: number) => `http://0.0.0.0:${p}/`],
  ])('%s: the loopback receiver gets nothing', async (_name, url) => {
    g = await testGateway();
    await endWithCallback(g, url(port));
    expect(hits).toEqual([]);
  });

  it('a name that resolves to a public address, then to 127.0.0.1 (DNS rebinding), never reaches the loopback receiver', async () => {
    g = await testGateway();
    const asked: string[] = [];
    let n = 0;
    // Answers a public address at the check, loopback afterwards: a client that resolved again to connect would go inside.
    withResolver(g, async (host) => {
      asked.push(host);
      return [{ address: n++ === 0 ? '203.0.114.7' : '127.0.0.1', family: 4 }];
    });
    await endWithCallback(g, `http://rebind.example:${port}/steal`);
    expect(asked[0]).toBe('rebind.example');
    expect(hits).toEqual([]);
  });

  it('the connection goes to the address the resolver answered, not to what the system resolves the name to', async () => {
    g = await testGateway();
    // With private targets allowed, a name no DNS knows, pinned to 127.0.0.1 by the resolver, is reached.
    withResolver(g, async () => [{ address: '127.0.0.1', family: 4 }], true);
    await endWithCallback(g, `http://pinned.invalid:${port}/ok`);
    expect(hits).toEqual([`POST pinned.invalid:${port} /ok`]);
  });

  it('a name resolving to any private address among public ones is refused', async () => {
    g = await testGateway();
    withResolver(g, async () => [
      { address: '203.0.114.7', family: 4 },
      { address: '::ffff:127.0.0.1', family: 6 },
    ]);
    await endWithCallback(g, `http://mixed.example:${port}/`);
    expect(hits).toEqual([]);
  });

  it('a redirect is not followed, even where private targets are allowed', async () => {
    g = await testGateway({ CORRAL_CALLBACK_PRIVATE: 'true' });
    await endWithCallback(g, `http://127.0.0.1:${port}/redirect`);
    expect(hits).toEqual([`POST 127.0.0.1:${port} /redirect`]);
  });

  it('a callbackUrl with credentials is 422 naming callbackUrl', async () => {
    g = await testGateway();
    const token = await g.tenant('creds');
    for (const callbackUrl of ['https://user:pass@example.org/hook', 'https://user@example.org/hook']) {
      const res = await g.req('POST', '/v1/jobs', { token, body: { command: 'true', callbackUrl } });
      expect(res.status).toBe(422);
      expect((await problemOf(res)).fields).toContain('callbackUrl');
    }
  });
});

describe('address classification', () => {
  it.each([
    '127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '255.255.255.255',
    '198.18.0.1', '192.0.0.8', '240.0.0.1', '224.0.0.1', '::1', '::', 'fe80::1', 'fd00::1', 'ff02::1',
    '::ffff:127.0.0.1', '::ffff:10.0.0.1', '2002:7f00:1::1', '64:ff9b::7f00:1', '2001:0:4136:e378:8000:63bf:3fff:fdd2',
    '2001:db8::1', '::7f00:1', '::a00:1', 'fec0::1', 'not an address',
  ])('%s is not public', (ip) => {
    expect(isPublicAddress(ip)).toBe(false);
  });

  it.each(['8.8.8.8', '203.0.114.7', '2606:4700::1111', '::ffff:8.8.8.8'])('%s is public', (ip) => {
    expect(isPublicAddress(ip)).toBe(true);
  });
});
