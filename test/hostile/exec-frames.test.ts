import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EXEC_PROTOCOL, ExecClient, ExecutorRefused, MAX_OUT_FRAME, MAX_RUN_FRAME, type ExitStatus } from '../../agent/executor/client.js';

/**
 * A compromised executor (the job owns the container it runs in) can write any bytes to the
 * agent's socket. Each case here is a real unix-socket server speaking for such an executor; the
 * claim is that the agent's ExecClient turns every violation into one contained failure: a reason,
 * a closed socket, no event for the bad frame, nothing thrown, and no buffering of what a header
 * merely announces.
 */

// Frame types as corral-exec.c numbers them; written out here so the test does not trust the client's copy.
const RUN = 1;
const READY = 10;
const OUT = 12;
const ERR = 13;
const EXIT = 14;
const F_FILTER = 1;

/** [u32 LE payload length][u8 type][payload]; `len` lets a header lie about its payload. */
function frame(type: number, payload: Buffer | string = Buffer.alloc(0), len = Buffer.byteLength(payload)): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32LE(len);
  head[4] = type;
  return Buffer.concat([head, Buffer.from(payload)]);
}

const words = (...ns: number[]) => {
  const b = Buffer.alloc(4 * ns.length);
  ns.forEach((n, i) => b.writeUInt32LE(n >>> 0, 4 * i));
  return b;
};
const ready = (version = EXEC_PROTOCOL, features = F_FILTER) => frame(READY, words(version, features));
const exitFrame = (status: number, flags: number) => frame(EXIT, words(status, flags));

/** Writes one byte at a time, letting the client read each before the next is written. */
async function trickle(sock: Socket, bytes: Buffer): Promise<void> {
  for (const b of bytes) {
    await new Promise<void>((resolve, reject) => sock.write(Buffer.from([b]), (err) => (err ? reject(err) : resolve())));
    // One turn of the event loop (poll, then check): the client's read of this byte happens in between.
    await new Promise(setImmediate);
  }
}

/** The executor's end of one connection: what the client wrote, and when it hung up. */
interface Peer {
  sock: Socket;
  /** Resolves when the executor sees the connection closed. */
  closed: Promise<unknown>;
  nextFrame(): Promise<{ type: number; payload: Buffer }>;
  /** Bytes the client has written that no nextFrame() has consumed. */
  unread(): number;
}

function peerOf(sock: Socket): Peer {
  let rx = Buffer.alloc(0);
  sock.on('data', (d) => (rx = Buffer.concat([rx, d])));
  sock.on('error', () => {}); // a reset by the client is an outcome here, not a test failure
  // Not events.once: that rejects on the 'error' (a reset) that may come before 'close'.
  const closed = new Promise((resolve) => sock.once('close', resolve));
  return {
    sock,
    closed,
    unread: () => rx.length,
    async nextFrame() {
      while (rx.length < 5 || rx.length < 5 + rx.readUInt32LE(0)) await once(sock, 'data');
      const len = rx.readUInt32LE(0);
      const f = { type: rx[4]!, payload: rx.subarray(5, 5 + len) };
      rx = rx.subarray(5 + len);
      return f;
    },
  };
}

interface FakeExecutor {
  path: string;
  /** Connections accepted so far: a client that retries shows up here. */
  connections: number;
  /** The first connection. */
  peer: Promise<Peer>;
}

const servers: Array<{ server: Server; dir: string }> = [];
const clients: ExecClient[] = [];

/** A unix-socket server in a fresh directory that greets every connection with `greet`. */
async function fakeExecutor(greet: (sock: Socket) => unknown = (s) => s.write(ready())): Promise<FakeExecutor> {
  const dir = mkdtempSync(join(tmpdir(), 'corral-exec-frames-'));
  let first!: (p: Peer) => void;
  const exec: FakeExecutor = { path: join(dir, 'exec.sock'), connections: 0, peer: new Promise((r) => (first = r)) };
  const server = createServer((sock) => {
    const peer = peerOf(sock);
    if (exec.connections++ === 0) first(peer);
    void greet(sock);
  });
  servers.push({ server, dir });
  server.listen(exec.path);
  await once(server, 'listening');
  return exec;
}

type Seen = ['stdout' | 'stderr', string] | ['exit', ExitStatus];

/** A client past READY, with every event it emits from here on recorded. */
interface Conn {
  exec: FakeExecutor;
  peer: Peer;
  client: ExecClient;
  events: Seen[];
  closed: Promise<unknown>;
}

function watch(exec: FakeExecutor, peer: Peer, client: ExecClient): Conn {
  clients.push(client);
  const events: Seen[] = [];
  client.on('stdout', (b) => events.push(['stdout', b.toString()]));
  client.on('stderr', (b) => events.push(['stderr', b.toString()]));
  client.on('exit', (s) => events.push(['exit', s]));
  return { exec, peer, client, events, closed: once(client, 'close') };
}

async function connected(): Promise<Conn> {
  const exec = await fakeExecutor();
  const client = await ExecClient.connect(exec.path);
  return watch(exec, await exec.peer, client);
}

const request = (outputBudget: number) => ({ argv: ['x'], env: {}, uid: 1000, gid: 1000, outputBudget });

/** A client with one run requested; the executor has read the RUN frame. */
async function running(outputBudget = 1024 * 1024): Promise<Conn> {
  const c = await connected();
  c.client.run(request(outputBudget));
  expect((await c.peer.nextFrame()).type).toBe(RUN);
  return c;
}

let thrown: unknown[] = [];
const record = (err: unknown) => thrown.push(err);
beforeEach(() => {
  thrown = [];
  process.on('uncaughtException', record);
});
afterEach(() => {
  process.off('uncaughtException', record);
  for (const c of clients.splice(0)) c.close();
  for (const { server, dir } of servers.splice(0)) {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
  // Whatever the executor sent, nothing escaped the client's socket handlers.
  expect(thrown).toEqual([]);
});

/** One contained failure: a reason naming the violation, the socket closed on both ends (afterEach checks nothing was thrown). */
async function expectContained(c: Conn, reason: RegExp): Promise<void> {
  await c.closed;
  expect(c.client.failure).toMatch(reason);
  expect(c.client.alive).toBe(false);
  await c.peer.closed;
}

// A check that went missing shows up as a hang (the client waits for more); fail fast instead.
describe('the executor client contains a hostile executor', { timeout: 2000 }, () => {
  describe('at the handshake', () => {
    it('refuses an executor whose kernel would not install the job filter, without resolving a client or retrying', async () => {
      const exec = await fakeExecutor((s) => s.write(ready(EXEC_PROTOCOL, 0)));
      const err = await ExecClient.connect(exec.path).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ExecutorRefused);
      expect((err as Error).message).toMatch(/seccomp filter/);
      await (await exec.peer).closed;
      expect(exec.connections).toBe(1);
    });

    it('refuses an executor announcing another protocol version', async () => {
      const exec = await fakeExecutor((s) => s.write(ready(EXEC_PROTOCOL + 1)));
      const err = await ExecClient.connect(exec.path).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ExecutorRefused);
      expect((err as Error).message).toMatch(new RegExp(`protocol ${EXEC_PROTOCOL + 1}, not ${EXEC_PROTOCOL}`));
      await (await exec.peer).closed;
      expect(exec.connections).toBe(1);
    });

    it.each([4, 12])('refuses a READY of %i bytes instead of 8', async (len) => {
      const payload = words(EXEC_PROTOCOL, F_FILTER, 0).subarray(0, len);
      const exec = await fakeExecutor((s) => s.write(frame(READY, payload)));
      const err = await ExecClient.connect(exec.path).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ExecutorRefused);
      expect((err as Error).message).toMatch(`frame type ${READY} with ${len} bytes`);
      await (await exec.peer).closed;
      expect(exec.connections).toBe(1);
    });

    it('fails on a second READY', async () => {
      const c = await connected();
      c.peer.sock.write(ready());
      await expectContained(c, /a second READY/);
      expect(c.events).toEqual([]);
    });
  });

  describe('frames outside the protocol', () => {
    it.each([0, RUN, 11, 255])('fails on frame type %i, which the executor never sends', async (type) => {
      const c = await running();
      c.peer.sock.write(frame(type, words(0, 0)));
      await expectContained(c, new RegExp(`unknown frame type ${type}\\b`));
      expect(c.events).toEqual([]);
    });

    it('fails on an OUT frame one byte longer than MAX_OUT_FRAME, within the run budget', async () => {
      const c = await running(4 * MAX_OUT_FRAME);
      c.peer.sock.write(frame(OUT, Buffer.alloc(MAX_OUT_FRAME + 1, 'a')));
      await expectContained(c, new RegExp(`frame type ${OUT} with ${MAX_OUT_FRAME + 1} bytes`));
      expect(c.events).toEqual([]);
    });

    it('refuses a header announcing a 4 GiB OUT frame as soon as the header arrives, without waiting for the payload', async () => {
      const c = await running();
      const sentBefore = c.peer.sock.bytesWritten;
      c.peer.sock.write(frame(OUT, Buffer.alloc(0), 0xffffffff));
      // The executor never sends the payload: the client can only fail on the 5-byte header.
      await expectContained(c, new RegExp(`frame type ${OUT} with ${0xffffffff} bytes`));
      expect(c.peer.sock.bytesWritten - sentBefore).toBe(5);
      expect(c.events).toEqual([]);
    });

    it.each([
      ['OUT', OUT],
      ['ERR', ERR],
    ])('fails on a zero-length %s frame', async (_name, type) => {
      const c = await running();
      c.peer.sock.write(frame(type));
      await expectContained(c, new RegExp(`frame type ${type} with 0 bytes`));
      expect(c.events).toEqual([]);
    });

    it.each([4, 12])('fails on an EXIT of %i bytes instead of 8', async (len) => {
      const c = await running();
      c.peer.sock.write(frame(EXIT, words(0, 1, 0).subarray(0, len)));
      await expectContained(c, new RegExp(`frame type ${EXIT} with ${len} bytes`));
      expect(c.events).toEqual([]);
    });

    it('delivers a valid frame and then fails on the garbage that follows it in the same write', async () => {
      const c = await running();
      c.peer.sock.write(Buffer.concat([frame(OUT, 'ok'), Buffer.alloc(16, 0xff)]));
      await expectContained(c, /unknown frame type 255/);
      expect(c.events).toEqual([['stdout', 'ok']]);
    });
  });

  describe('frames out of turn', () => {
    it.each([
      ['OUT', frame(OUT, 'hi'), OUT],
      ['ERR', frame(ERR, 'hi'), ERR],
      ['EXIT', exitFrame(0, 1), EXIT],
    ])('fails on %s before any run was requested', async (_name, bytes, type) => {
      const c = await connected();
      c.peer.sock.write(bytes);
      await expectContained(c, new RegExp(`frame type ${type} with no job running`));
      expect(c.events).toEqual([]);
    });

    it('fails on output after the run has exited', async () => {
      const c = await running();
      c.peer.sock.write(Buffer.concat([exitFrame(0, 1), frame(OUT, 'late')]));
      await expectContained(c, new RegExp(`frame type ${OUT} with no job running`));
      expect(c.events).toEqual([['exit', { code: 0, signal: null, clean: true, truncated: false }]]);
    });
  });

  describe('output budget', () => {
    it('fails on 11 bytes of output for a run with a budget of 10', async () => {
      const c = await running(10);
      c.peer.sock.write(frame(OUT, '12345678901'));
      await expectContained(c, /output past the run budget/);
      expect(c.events).toEqual([]);
    });

    it('counts stdout and stderr against one budget', async () => {
      const c = await running(10);
      c.peer.sock.write(Buffer.concat([frame(OUT, '123456'), frame(ERR, '78901')]));
      await expectContained(c, /output past the run budget/);
      expect(c.events).toEqual([['stdout', '123456']]);
    });
  });

  describe('valid traffic still gets through', () => {
    it('decodes READY, OUT and EXIT written one byte at a time', async () => {
      const exec = await fakeExecutor((s) => trickle(s, ready()));
      const client = await ExecClient.connect(exec.path);
      const c = watch(exec, await exec.peer, client);
      let reads = 0;
      // Observing the client's own socket (not replacing it): proves the frames really arrived split.
      client['sock'].on('data', () => reads++);
      client.run(request(10));
      expect((await c.peer.nextFrame()).type).toBe(RUN);
      const exited = once(client, 'exit');
      const bytes = Buffer.concat([frame(OUT, 'hello'), exitFrame(3 << 8, 1)]);
      await trickle(c.peer.sock, bytes);
      await exited;
      expect(reads).toBeGreaterThan(bytes.length / 2);
      expect(c.events).toEqual([
        ['stdout', 'hello'],
        ['exit', { code: 3, signal: null, clean: true, truncated: false }],
      ]);
      expect(client.failure).toBeUndefined();
      expect(client.alive).toBe(true);
    });

    it('delivers a flood of 10,000 small OUT frames filling the budget exactly, whole and in order', async () => {
      const chunks = Array.from({ length: 10_000 }, (_, i) => String(i).padStart(5, '0'));
      const c = await running(5 * chunks.length);
      const exited = once(c.client, 'exit');
      c.peer.sock.write(Buffer.concat([...chunks.map((s) => frame(OUT, s)), exitFrame(0, 1 | 2)]));
      await exited;
      expect(c.events).toEqual([...chunks.map((s) => ['stdout', s]), ['exit', { code: 0, signal: null, clean: true, truncated: true }]]);
      expect(c.client.failure).toBeUndefined();
      expect(c.client.alive).toBe(true);
    });
  });

  describe('what the agent sends', () => {
    it('refuses a run request larger than MAX_RUN_FRAME, sends nothing, and still accepts the next run', async () => {
      const c = await connected();
      expect(() => c.client.run({ ...request(10), stdin: Buffer.alloc(MAX_RUN_FRAME) })).toThrow(/exceeds the executor's/);
      c.client.run({ ...request(10), stdin: Buffer.from('small') });
      // The first thing the executor reads is the second request, whole: the refused one left no bytes.
      const f = await c.peer.nextFrame();
      expect(f.type).toBe(RUN);
      expect(f.payload.subarray(-5).toString()).toBe('small');
      expect(f.payload.length).toBeLessThan(100);
      expect(c.peer.unread()).toBe(0);
      expect(c.client.alive).toBe(true);
    });
  });
});
