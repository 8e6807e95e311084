import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import WebSocket from 'ws';
import { mintToken } from '../../src/auth/tokens.js';
import { loadGatewayConfig } from '../../src/config.js';
import { startGateway, type Gateway } from '../../src/gateway.js';
import type { BuildOptions } from '../../src/services.js';
import { AGENT_PATH, GatewayMessage, MAX_FRAME_BYTES, PROTOCOL_VERSION, parseFrame } from '../../src/protocol/messages.js';

/**
 * A real gateway on a loopback port, and agents that speak the wire protocol from a test: the
 * claims these serve are about the gateway (what it admits, frames and places), so no
 * containers are needed; the protocol and the WebSocket limits are the real ones.
 */
export interface LoopbackGateway {
  gateway: Gateway;
  url: string;
  /**
   * Stands for "an agent token of this gateway": `fakeAgent` dials with one minted for its own
   * name, as agent tokens are bound to one name. `agentTokenFor` mints one for a given name.
   */
  agentToken: string;
  agentTokenFor(name: string): Promise<string>;
  tenant(id: string, quota?: Record<string, number | null>): Promise<string>;
  req(method: string, path: string, token: string, body?: unknown): Promise<{ status: number; body: any }>;
  close(): Promise<void>;
}

export async function loopbackGateway(env: Record<string, string> = {}, o: BuildOptions = {}): Promise<LoopbackGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'corral-loopback-'));
  const config = loadGatewayConfig({}, { CORRAL_DATA: dir, CORRAL_PORT: '0', CORRAL_LOG_LEVEL: 'silent', ...env });
  const gateway = await startGateway(config, { log: pino({ level: 'silent' }), ...o });
  const sign = (t: { sub: string; tenant?: string; scopes: Array<'agent' | 'admin' | 'jobs:read' | 'jobs:write'> }) =>
    mintToken({ secret: gateway.services.secret, issuer: 'corral', audience: 'corral', ttlSeconds: 3600, ...t });
  const admin = await sign({ sub: 'admin', scopes: ['admin'] });
  const agentTokenFor = (name: string) => sign({ sub: `agent:${name}`, scopes: ['agent'] });
  const agentToken = `loopback-agent-token-${dir}`;
  perName.set(agentToken, agentTokenFor);
  const req: LoopbackGateway['req'] = async (method, path, token, body) => {
    const res = await fetch(gateway.url + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    return { status: res.status, body: await res.json().catch(() => null) };
  };
  return {
    gateway,
    url: gateway.url,
    agentToken,
    agentTokenFor,
    async tenant(id, quota) {
      const r = await req('POST', '/v1/tenants', admin, { id, ...(quota && { quota }) });
      if (r.status !== 201) throw new Error(`tenant ${id}: ${r.status} ${JSON.stringify(r.body)}`);
      return sign({ sub: id, tenant: id, scopes: ['jobs:read', 'jobs:write'] });
    },
    req,
    async close() {
      perName.delete(agentToken);
      await gateway.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** `LoopbackGateway.agentToken` → the gateway's minter of name-bound agent tokens. */
const perName = new Map<string, (name: string) => Promise<string>>();

export type RunFrame = Extract<GatewayMessage, { type: 'run' }>;

export interface FakeAgent {
  name: string;
  ws: WebSocket;
  /** Every frame the gateway sent, parsed with the agent's schema. */
  frames: GatewayMessage[];
  /** Frames that did not parse (the real agent drops these). */
  malformed: string[];
  /** Set when the link closed: ws closes with 1009 when a frame exceeds maxPayload. */
  closed?: { code: number; reason: string };
  runs(): RunFrame[];
  /** The first run frame not returned before, waiting for it if need be. */
  nextRun(ms?: number): Promise<RunFrame>;
  /** Reports the attempt done with exit code 0. */
  succeed(run: RunFrame): void;
  /** Sends a heartbeat listing the attempts it still runs. */
  heartbeat(running: Array<{ jobId: string; fence: number }>): void;
  /** Sends any frame as it is. */
  send(frame: object): void;
  close(): Promise<void>;
}

const emptyPool = { containers: 0, blank: {}, warm: [], busy: 0, recycled: 0 };

/**
 * Dials `url` like `corral agent` does (same path, token and maxPayload) and says hello. With
 * `autoPong: false` it leaves the gateway's pings unanswered: a link gone silent.
 */
export async function fakeAgent(
  url: string,
  token: string,
  o: {
    name: string;
    cpus?: number;
    memoryBytes?: number;
    slots?: number;
    images?: string[];
    autoPong?: boolean;
    /** Attempts its hello reports running (an agent that reconnects). */
    running?: Array<{ jobId: string; fence: number }>;
  },
): Promise<FakeAgent> {
  const bearer = (await perName.get(token)?.(o.name)) ?? token;
  const ws = new WebSocket(url.replace('http', 'ws') + AGENT_PATH, {
    headers: { authorization: `Bearer ${bearer}` },
    maxPayload: MAX_FRAME_BYTES,
    autoPong: o.autoPong ?? true,
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  let consumed = 0;
  const agent: FakeAgent = {
    name: o.name,
    ws,
    frames: [],
    malformed: [],
    runs: () => agent.frames.filter((f): f is RunFrame => f.type === 'run'),
    async nextRun(ms = 5000) {
      const seen = consumed++;
      const deadline = Date.now() + ms;
      while (agent.runs().length <= seen) {
        if (agent.closed) throw new Error(`agent link closed: ${agent.closed.code} ${agent.closed.reason}`);
        if (Date.now() > deadline) throw new Error('no run frame arrived');
        await new Promise((r) => setTimeout(r, 10));
      }
      return agent.runs()[seen]!;
    },
    succeed(run) {
      ws.send(JSON.stringify({ type: 'ended', jobId: run.jobId, fence: run.fence, container: `${o.name}-c`, result: { exitCode: 0, signal: null, reason: 'exit', wallMs: 1 } }));
    },
    heartbeat(running) {
      ws.send(JSON.stringify({ type: 'heartbeat', images: o.images ?? ['busybox'], pool: emptyPool, running: running.map((r) => ({ jobId: r.jobId, fence: r.fence })) }));
    },
    send(frame) {
      ws.send(JSON.stringify(frame));
    },
    async close() {
      if (ws.readyState === ws.CLOSED) return;
      const closed = new Promise((r) => ws.once('close', r));
      ws.close();
      await closed;
    },
  };
  ws.on('error', () => {});
  ws.on('close', (code, reason) => (agent.closed = { code, reason: reason.toString() }));
  // A link the gateway refuses (its close code and reason) rejects instead of waiting forever.
  const welcomed = new Promise<void>((resolve, reject) => {
    ws.on('message', (data) => {
      const parsed = parseFrame(GatewayMessage, data);
      if (!parsed.ok) return void agent.malformed.push(parsed.error);
      agent.frames.push(parsed.msg);
      if (parsed.msg.type === 'welcome') resolve();
    });
    ws.on('close', (code, reason) => reject(Object.assign(new Error(`refused: ${code} ${reason.toString()}`), { code, reason: reason.toString() })));
  });
  ws.send(
    JSON.stringify({
      type: 'hello',
      version: PROTOCOL_VERSION,
      agent: o.name,
      capacity: { cpus: o.cpus ?? 2, memoryBytes: o.memoryBytes ?? 4 * 1024 ** 3, slots: o.slots ?? 4 },
      images: o.images ?? ['busybox'],
      pool: emptyPool,
      running: o.running ?? [],
    }),
  );
  await welcomed;
  return agent;
}

/** Polls `check` until it is true or `ms` pass. */
export async function until(check: () => boolean | Promise<boolean>, ms = 5000, every = 10): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, every));
  }
}
