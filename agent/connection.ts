import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import WebSocket from 'ws';
import { AGENT_PATH, GatewayMessage, MAX_FRAME_BYTES, parseFrame, type AgentMessage } from '../src/protocol/messages.js';

export interface ConnectionEvents {
  message: [GatewayMessage];
  open: [];
  close: [];
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
}

/** Frames kept for the gateway while disconnected (results are never dropped; output may be). */
const OUTBOX_LIMIT = 10_000;

/**
 * The agent's link to the gateway: dials, says hello, validates every frame, and reconnects
 * with exponential backoff and full jitter. Results produced while the link is down are kept
 * and sent after the next hello.
 */
export class Connection extends EventEmitter<ConnectionEvents> {
  private ws?: WebSocket;
  private attempt = 0;
  private closed = false;
  private retry?: NodeJS.Timeout;
  private outbox: AgentMessage[] = [];

  constructor(private readonly o: ConnectionOptions) {
    super();
  }

  start(): void {
    this.dial();
  }

  get open(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  private dial(): void {
    const url = this.o.gateway.replace(/\/+$/, '') + AGENT_PATH;
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${this.o.token}` }, maxPayload: MAX_FRAME_BYTES, handshakeTimeout: 10_000 });
    this.ws = ws;
    ws.on('open', () => {
      this.attempt = 0;
      ws.send(JSON.stringify(this.o.hello()));
      const pending = this.outbox;
      this.outbox = [];
      for (const m of pending) ws.send(JSON.stringify(m));
      this.o.log.info({ gateway: this.o.gateway }, 'connected to gateway');
      this.emit('open');
    });
    ws.on('message', (data) => {
      const parsed = parseFrame(GatewayMessage, data);
      if (!parsed.ok) return void this.o.log.warn({ error: parsed.error }, 'dropped malformed gateway frame');
      this.emit('message', parsed.msg);
    });
    ws.on('unexpected-response', (_req, res) => {
      this.o.log.error({ status: res.statusCode }, 'gateway refused the agent (check the agent token)');
    });
    ws.on('error', (err) => this.o.log.warn({ err: err.message }, 'gateway connection error'));
    ws.on('close', (code, reason) => {
      if (this.ws !== ws) return;
      this.emit('close');
      if (this.closed) return;
      const base = this.o.minDelayMs ?? 250;
      const cap = this.o.maxDelayMs ?? 10_000;
      const delay = Math.random() * Math.min(cap, base * 2 ** this.attempt++);
      this.o.log.warn({ code, reason: reason.toString(), retryInMs: Math.round(delay) }, 'gateway connection closed');
      this.retry = setTimeout(() => this.dial(), delay);
    });
  }

  /** Sends now, or keeps the frame for the next connection (output is dropped when the outbox is full). */
  send(msg: AgentMessage): void {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) return void this.ws.send(JSON.stringify(msg));
    if (msg.type === 'heartbeat' || msg.type === 'hello') return;
    if (msg.type === 'output' && this.outbox.length >= OUTBOX_LIMIT) return;
    this.outbox.push(msg);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    this.ws?.close(1000, 'agent stopping');
  }
}
