import { EventEmitter } from 'node:events';
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocketServer, type WebSocket } from 'ws';
import type { TokenVerifier } from '../auth/verifier.js';
import {
  AGENT_PATH,
  AgentMessage,
  CLOSE,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  agentNameOf,
  parseFrame,
  type GatewayMessage,
} from '../protocol/messages.js';
import { commitTransitions } from '../queue/commit.js';
import { handleMessage, type HandlerDeps } from './handlers.js';
import { assign, warmKey, type AgentConn } from './conn.js';

export interface HubEvents {
  /** Capacity appeared: an agent said hello, or a slot came free. */
  'capacity': [];
  'agent:gone': [{ agent: string }];
}

const HELLO_TIMEOUT_MS = 10_000;

/**
 * The agents' WebSocket hub: authenticates agents at the upgrade (agent scope), admits each under
 * the one name its token allows and refuses a second link for a connected name, validates every
 * frame and hands it to its handler, and drops links that go silent for a lease (pings every
 * `heartbeatMs`). See the lifecycle in src/protocol/messages.ts.
 */
export class AgentHub extends EventEmitter<HubEvents> {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES });
  private readonly conns = new Map<string, AgentConn>();
  private liveness?: NodeJS.Timeout;

  constructor(
    private readonly deps: Omit<HandlerDeps, 'hub'> & {
      verifier: TokenVerifier;
      log: Logger;
      heartbeatMs: number;
      commit: <T>(fn: () => T, o?: { durable?: boolean }) => Promise<T>;
    },
  ) {
    super();
    deps.machine.on('job:cancel', ({ jobId, agent, fence }) => this.send(agent, { type: 'cancel', jobId, fence }));
  }

  /** Takes over upgrades to the agent path on `server`. */
  attach(server: Server): void {
    server.on('upgrade', (req, socket, head) => {
      void this.upgrade(req, socket, head);
    });
    this.liveness = setInterval(() => this.checkLiveness(), this.deps.heartbeatMs);
    this.liveness.unref();
  }

  /**
   * Pings every agent, and terminates a link it has heard nothing on (no frame, no pong) for a
   * lease: a half-open TCP link would otherwise hold the agent's name, and its slots, forever.
   * Its attempts keep their leases and run out like any silent agent's.
   */
  checkLiveness(now = Date.now()): void {
    for (const c of this.conns.values()) {
      if (now - c.heardAt > this.deps.machine.leaseMs) {
        this.deps.log.warn({ agent: c.id, silentMs: now - c.heardAt }, 'agent link silent for a lease: dropped');
        c.ws.terminate();
      } else if (c.ws.readyState === c.ws.OPEN) c.ws.ping();
    }
  }

  /**
   * Pings a link another dial claims the name of, and terminates it if nothing is heard on it
   * within a heartbeat: an agent restarted behind a half-open link (its host rebooted, a NAT
   * forgot the flow) then waits a heartbeat, not a lease. A live agent answers the ping.
   */
  private probe(c: AgentConn): void {
    const asked = Date.now();
    if (c.ws.readyState === c.ws.OPEN) c.ws.ping();
    setTimeout(() => {
      if (this.conns.get(c.id) !== c || c.heardAt >= asked) return;
      this.deps.log.warn({ agent: c.id }, 'agent link did not answer a ping while another dialled as it: dropped');
      c.ws.terminate();
    }, this.deps.heartbeatMs).unref();
  }

  private async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const refuse = (status: number, text: string) => {
      socket.end(`HTTP/1.1 ${status} ${text}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${text}\n`);
    };
    try {
      const path = (req.url ?? '').split('?')[0];
      if (path !== AGENT_PATH) return refuse(404, 'Not Found');
      const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
      if (!m) return refuse(401, 'Unauthorized');
      const principal = await this.deps.verifier.verify(m[1]!).catch(() => undefined);
      if (!principal) return refuse(401, 'Unauthorized');
      if (!principal.scopes.has('agent')) return refuse(403, 'Forbidden');
      this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, principal.sub, agentNameOf(principal.sub)));
    } catch (err) {
      this.deps.log.warn({ err }, 'agent upgrade failed');
      refuse(400, 'Bad Request');
    }
  }

  /** `allowed` is the one agent name the token may connect as (see agentNameOf). */
  private accept(ws: WebSocket, sub: string, allowed: string | undefined): void {
    let conn: AgentConn | undefined;
    const helloTimer = setTimeout(() => ws.close(CLOSE.helloExpected, 'hello expected'), HELLO_TIMEOUT_MS);
    ws.on('error', (err) => this.deps.log.warn({ err, agent: conn?.id }, 'agent socket error'));
    ws.on('pong', () => {
      if (conn) conn.heardAt = Date.now();
    });
    ws.on('message', (data) => {
      if (conn) conn.heardAt = Date.now();
      const parsed = parseFrame(AgentMessage, data);
      if (!parsed.ok) {
        this.deps.log.warn({ agent: conn?.id ?? sub, error: parsed.error }, 'dropped malformed agent frame');
        return;
      }
      const msg = parsed.msg;
      try {
        if (!conn) {
          if (msg.type !== 'hello') return void ws.close(CLOSE.helloExpected, 'hello expected');
          if (msg.version !== PROTOCOL_VERSION) return void ws.close(CLOSE.protocol, `protocol ${PROTOCOL_VERSION} required`);
          clearTimeout(helloTimer);
          if (msg.agent !== allowed) {
            this.deps.log.warn({ sub, agent: msg.agent }, 'agent refused: its token is not for that name');
            return void ws.close(CLOSE.nameRefused, allowed === undefined ? 'token names no agent (sub must be agent:NAME)' : `token is for agent ${allowed}`);
          }
          const holder = this.conns.get(msg.agent);
          if (holder) {
            // Refused, not taken over: the first link keeps its attempts. It is asked for a pong,
            // so a half-open one is dropped within a heartbeat and the agent's next dial gets in.
            this.deps.log.warn({ agent: msg.agent }, 'agent refused: a link for that name is open');
            this.probe(holder);
            return void ws.close(CLOSE.nameInUse, 'agent name in use');
          }
          conn = this.register(ws, msg);
          return;
        }
        const c = conn;
        if (msg.type === 'pool') return handleMessage({ ...this.deps, hub: this }, c, msg); // memory only
        // Frames from one turn of the event loop share one grouped commit (one fsync).
        // Only a result must be on disk before anyone is told; starts, output and heartbeats ride
        // along. Job events leave after the commit (after the fsync, for a result).
        // A result is acknowledged once what was done with it is on disk; one whose write failed
        // (a full disk) is not, and the agent sends it again.
        commitTransitions(this.deps.commit, this.deps.machine, () => handleMessage({ ...this.deps, hub: this }, c, msg), { durable: msg.type === 'ended' })
          .then(() => {
            if (msg.type === 'ended') this.sendTo(c, { type: 'ack', jobId: msg.jobId, fence: msg.fence });
          })
          .catch((err: unknown) => this.deps.log.error({ err, agent: c.id, type: msg.type }, 'agent message handler failed'));
      } catch (err) {
        this.deps.log.error({ err, agent: conn?.id, type: msg.type }, 'agent message handler failed');
      }
    });
    ws.on('close', () => {
      clearTimeout(helloTimer);
      if (conn && this.conns.get(conn.id) === conn) {
        this.conns.delete(conn.id);
        this.deps.images.forgetAgent(conn.id);
        this.deps.log.info({ agent: conn.id }, 'agent disconnected');
        // Its attempts keep their leases: the agent may reconnect and report them; if not, they expire.
        this.emit('agent:gone', { agent: conn.id });
      }
    });
  }

  private register(ws: WebSocket, hello: Extract<AgentMessage, { type: 'hello' }>): AgentConn {
    const conn: AgentConn = {
      id: hello.agent,
      ws,
      capacity: hello.capacity,
      images: hello.images,
      pool: hello.pool,
      running: new Map(),
      memory: new Map(),
      memoryCommitted: 0,
      warm: new Map(hello.pool.warm.map((w) => [warmKey(w.tenant, w.image), w.idle])),
      connectedAt: Date.now(),
      lastSeen: Date.now(),
      heardAt: Date.now(),
    };
    this.conns.set(conn.id, conn);
    this.deps.images.setAgentImages(conn.id, hello.images);
    this.sendTo(conn, { type: 'welcome', version: PROTOCOL_VERSION, agent: conn.id, heartbeatMs: this.deps.heartbeatMs, leaseMs: this.deps.machine.leaseMs });
    // Attempts it still runs from before a reconnect: keep the current ones, stop the stale ones,
    // and send again the cancels issued while it was away.
    for (const r of hello.running) {
      const held = this.deps.machine.renewOne(r.jobId, r.fence, conn.id);
      if (held) assign(conn, r.jobId, r.fence, this.deps.machine.memoryOf(r.jobId));
      if (!held || held.cancelRequested) this.sendTo(conn, { type: 'cancel', jobId: r.jobId, fence: r.fence });
    }
    this.deps.log.info({ agent: conn.id, capacity: hello.capacity, images: hello.images, resumed: conn.running.size }, 'agent connected');
    this.emit('capacity');
    return conn;
  }

  send(agent: string, msg: GatewayMessage): boolean {
    const conn = this.conns.get(agent);
    return conn ? this.sendTo(conn, msg) : false;
  }

  sendTo(conn: AgentConn, msg: GatewayMessage): boolean {
    return this.sendEncoded(conn, JSON.stringify(msg));
  }

  /** Sends a frame already encoded (and checked against the protocol) by the caller. */
  sendEncoded(conn: AgentConn, text: string): boolean {
    if (conn.ws.readyState !== conn.ws.OPEN) return false;
    conn.ws.send(text);
    return true;
  }

  agents(): AgentConn[] {
    return [...this.conns.values()];
  }

  count(): number {
    return this.conns.size;
  }

  async close(): Promise<void> {
    clearInterval(this.liveness);
    for (const c of this.conns.values()) c.ws.close(1001, 'gateway stopping');
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}
