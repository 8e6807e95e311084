import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import WebSocket from 'ws';
import { AGENT_PATH, CLOSE, GatewayMessage, MAX_FRAME_BYTES, parseFrame, type AgentMessage } from '../src/protocol/messages.js';

export interface ConnectionEvents {
  message: [GatewayMessage];
  open: [];
  close: [];
  /** The gateway refused this agent for good (its token, its name, its protocol): it dials no more. */
  refused: [Error];
}

export interface ConnectionOptions {
  gateway: string;
  token: string;
  log: Logger;
  /** Frame sent first on every connection. */
  hello: () => AgentMessage;
  /** Reconnect backoff bounds, ms. */
  minDelayMs?: number;
  maxDelayMs?: number;
  /** Output of one attempt kept for a resend (KEPT_OUTPUT_BYTES). */
  keptOutputBytes?: number;
}

/** Output of one attempt kept for a resend; past it, chunks are sent once and may be lost with a link. */
const KEPT_OUTPUT_BYTES = 2 * 1024 * 1024;

type Output = Extract<AgentMessage, { type: 'output' }>;

interface KeptAttempt {
  output: Output[];
  /** Chunks past the kept bytes produced while the link was down: sent once, after the kept ones. */
  unsent: Output[];
  /** Bytes of output sent for the attempt, both streams: the next chunk's offset. */
  sentBytes: number;
  keptBytes: number;
  ended?: Extract<AgentMessage, { type: 'ended' }>;
  sentAt: number;
}

/** Output chunks past the kept bytes held for the gateway while disconnected (results are never dropped). */
const OUTBOX_LIMIT = 10_000;

/**
 * How long to wait before dial number `tries` (from 0): exponential backoff with full jitter
 * between `minDelayMs` (250) and `maxDelayMs` (10 s), capped at a quarter of the lease the gateway
 * last announced — the attempts this agent runs keep their leases only that long, and a gateway
 * back from a restart gives them one lease to be reported again, so an agent must not sleep
 * through it. A name still held (most likely this agent's own half-open link, which the gateway
 * drops within a heartbeat of the refusal) waits the cap.
 */
export function reconnectDelay(tries: number, nameInUse: boolean, o: { minDelayMs?: number; maxDelayMs?: number }, leaseMs?: number, random = Math.random): number {
  const base = o.minDelayMs ?? 250;
  // Never below the base, whatever lease a gateway announces: a 1 ms lease must not make a dial loop.
  const cap = Math.min(o.maxDelayMs ?? 10_000, leaseMs ? Math.max(base, leaseMs / 4) : Infinity);
  return nameInUse ? cap : random() * Math.min(cap, base * 2 ** tries);
}

/**
 * The agent's link to the gateway: dials, says hello, validates every frame, and reconnects
 * with exponential backoff and full jitter. Results produced while the link is down are kept
 * and sent after the next hello. A link it hears nothing on for a lease (the gateway pings every
 * heartbeat) is dropped and dialled again. A refusal does not make it spin: a bad token, a name
 * the token does not allow or another protocol version stop it (`refused`); a name still held by
 * an old link waits the longest backoff (see reconnectDelay).
 */
export class Connection extends EventEmitter<ConnectionEvents> {
  private ws?: WebSocket;
  private attempt = 0;
  private closed = false;
  private retry?: NodeJS.Timeout;
  private outbox: AgentMessage[] = [];
  /**
   * Attempts whose result (`ended`) the gateway has not acknowledged, by "jobId fence": their
   * output (up to KEPT_OUTPUT_BYTES, each chunk with its offset) and, once it ended, the result,
   * with when they were last sent. Sent again after every welcome and, for an ended attempt, every
   * other heartbeat while the link stays up, until the gateway's `ack` says the result is on disk
   * (see the protocol's lifecycle). A resent chunk carries its offset, so the gateway stores only
   * what it did not have: output in flight when the gateway died is not lost either.
   */
  private readonly attempts = new Map<string, KeptAttempt>();
  private liveness?: NodeJS.Timeout;
  /** When anything last came in on the current link (a frame, a ping, a pong). */
  private heardAt = 0;
  /** The gateway welcomed the current link: frames sent before could land on a link it refuses. */
  private welcomed = false;
  /** The attempts' lease the gateway last announced: reconnecting takes less than a quarter of it. */
  private leaseMs?: number;

  constructor(private readonly o: ConnectionOptions) {
    super();
  }

  start(): void {
    this.dial();
  }

  /** Whether the gateway has accepted the current link (frames sent now reach it). */
  get open(): boolean {
    return this.welcomed && this.ws?.readyState === WebSocket.OPEN;
  }

  private dial(): void {
    const url = this.o.gateway.replace(/\/+$/, '') + AGENT_PATH;
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${this.o.token}` }, maxPayload: MAX_FRAME_BYTES, handshakeTimeout: 10_000 });
    this.ws = ws;
    const heard = () => (this.heardAt = Date.now());
    ws.on('ping', heard);
    ws.on('pong', heard);
    ws.on('open', () => {
      heard();
      ws.send(JSON.stringify(this.o.hello()));
    });
    ws.on('message', (data) => {
      heard();
      const parsed = parseFrame(GatewayMessage, data);
      if (!parsed.ok) return void this.o.log.warn({ error: parsed.error }, 'dropped malformed gateway frame');
      if (parsed.msg.type === 'welcome') this.welcome(ws, parsed.msg);
      if (parsed.msg.type === 'ack') this.attempts.delete(`${parsed.msg.jobId} ${parsed.msg.fence}`);
      this.emit('message', parsed.msg);
    });
    ws.on('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 0;
      if (status === 401 || status === 403) this.refuse(`the gateway refused the agent token (HTTP ${status}): mint one with corral token --scope agent --name NAME`);
      else this.o.log.warn({ status }, 'gateway answered the upgrade with an error');
      ws.terminate(); // closes the attempt: a refusal stops, anything else dials again
    });
    ws.on('error', (err) => this.o.log.warn({ err: err.message }, 'gateway connection error'));
    ws.on('close', (code, reason) => {
      if (this.ws !== ws) return;
      this.welcomed = false;
      clearInterval(this.liveness);
      this.emit('close');
      if (code === CLOSE.protocol || code === CLOSE.nameRefused) this.refuse(`the gateway refused the agent: ${reason.toString() || code}`);
      if (this.closed) return;
      const delay = reconnectDelay(this.attempt++, code === CLOSE.nameInUse, this.o, this.leaseMs);
      this.o.log.warn({ code, reason: reason.toString(), retryInMs: Math.round(delay) }, 'gateway connection closed');
      this.retry = setTimeout(() => this.dial(), delay);
    });
  }

  /** The gateway accepted the link: what was kept for it goes out after the hello, in order. */
  private welcome(ws: WebSocket, m: Extract<GatewayMessage, { type: 'welcome' }>): void {
    this.attempt = 0;
    this.leaseMs = m.leaseMs ?? 3 * m.heartbeatMs;
    this.welcomed = true;
    const pending = this.outbox;
    this.outbox = [];
    for (const f of pending) ws.send(JSON.stringify(f));
    // After the output kept for them: a result goes after its attempt's output.
    this.resendResults(ws, 0);
    this.watch(ws, m.heartbeatMs, this.leaseMs);
    this.o.log.info({ gateway: this.o.gateway }, 'connected to gateway');
    this.emit('open');
  }

  /** Pings every `heartbeatMs` and drops the link once nothing has come in for `leaseMs`. */
  private watch(ws: WebSocket, heartbeatMs: number, leaseMs: number): void {
    clearInterval(this.liveness);
    this.liveness = setInterval(() => {
      if (Date.now() - this.heardAt > leaseMs) {
        this.o.log.warn({ silentMs: Date.now() - this.heardAt }, 'gateway link silent for a lease: dialling again');
        clearInterval(this.liveness);
        ws.terminate();
      } else if (ws.readyState === WebSocket.OPEN) {
        ws.ping();
        this.resendResults(ws, 2 * heartbeatMs);
      }
    }, heartbeatMs);
    this.liveness.unref();
  }

  /**
   * Sends again the kept output and results of attempts not acknowledged: all of them after a
   * welcome (`olderThanMs` 0), else the ended ones last sent at least `olderThanMs` ago.
   */
  private resendResults(ws: WebSocket, olderThanMs: number): void {
    const now = Date.now();
    for (const r of this.attempts.values()) {
      if (olderThanMs > 0 && (r.ended === undefined || now - r.sentAt < olderThanMs)) continue;
      r.sentAt = now;
      for (const chunk of r.output) ws.send(JSON.stringify(chunk));
      // In order after the kept chunks: the gateway appends a chunk without an offset.
      for (const chunk of r.unsent) ws.send(JSON.stringify(chunk));
      r.unsent = [];
      if (r.ended) ws.send(JSON.stringify(r.ended));
    }
  }

  /** Results the gateway has not acknowledged yet (they are sent again until it does). */
  get unacknowledged(): number {
    let n = 0;
    for (const r of this.attempts.values()) if (r.ended) n++;
    return n;
  }

  private kept(jobId: string, fence: number): KeptAttempt {
    const key = `${jobId} ${fence}`;
    let r = this.attempts.get(key);
    if (!r) this.attempts.set(key, (r = { output: [], unsent: [], sentBytes: 0, keptBytes: 0, sentAt: Date.now() }));
    return r;
  }

  private refuse(message: string): void {
    if (this.closed) return;
    this.closed = true;
    this.o.log.error(message);
    this.emit('refused', new Error(message));
  }

  /**
   * Sends now, or keeps the frame for the next welcomed link (a heartbeat or a pool report is
   * replaced by the next hello). Results and output are kept per attempt (see `attempts`).
   */
  send(msg: AgentMessage): void {
    if (msg.type === 'ended') {
      const r = this.kept(msg.jobId, msg.fence);
      // How much output the gateway should hold: it marks the job truncated if it holds less.
      r.ended = r.sentBytes > 0 ? { ...msg, outputBytes: r.sentBytes } : msg;
      r.sentAt = Date.now();
      if (this.open) this.ws!.send(JSON.stringify(r.ended));
      return;
    }
    if (msg.type === 'output') return this.sendOutput(msg);
    if (this.open) return void this.ws!.send(JSON.stringify(msg));
    if (msg.type === 'heartbeat' || msg.type === 'hello' || msg.type === 'pool') return;
    this.outbox.push(msg);
  }

  /**
   * Up to the kept bytes a chunk is kept with its offset, sent again after a welcome where the
   * gateway skips what it has. Past them it is sent once: now, or after the kept chunks of its
   * attempt on the next link (never before them: the gateway appends it where it lands).
   */
  private sendOutput(msg: Output): void {
    const r = this.kept(msg.jobId, msg.fence);
    const bytes = Buffer.byteLength(msg.data, 'base64');
    const offset = r.sentBytes;
    r.sentBytes += bytes;
    if (r.keptBytes + bytes <= (this.o.keptOutputBytes ?? KEPT_OUTPUT_BYTES)) {
      r.output.push({ ...msg, offset });
      r.keptBytes += bytes;
    } else if (!this.open) {
      // Dropped past the bound (its bytes are counted: the job's output is marked truncated).
      if (this.unsentChunks < OUTBOX_LIMIT) r.unsent.push(msg);
      return;
    }
    if (this.open) this.ws!.send(JSON.stringify(msg));
  }

  /** Chunks waiting for a link, over every attempt. */
  private get unsentChunks(): number {
    let n = 0;
    for (const r of this.attempts.values()) n += r.unsent.length;
    return n;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    clearInterval(this.liveness);
    this.ws?.close(1000, 'agent stopping');
  }
}
