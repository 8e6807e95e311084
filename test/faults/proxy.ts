import { createConnection, createServer, type Server, type Socket } from 'node:net';

/** A frame of the agent protocol seen on the wire, with what the checker needs of it. */
export interface WireFrame {
  at: number;
  agent: string;
  /** `up`: agent → gateway; `down`: gateway → agent. */
  dir: 'up' | 'down';
  type: string;
  jobId?: string;
  fence?: number;
  reason?: string;
  exitCode?: number | null;
}

/** Frame types the checker reads; output chunks and heartbeats are not decoded at all. */
const TAPPED = ['run', 'started', 'ended', 'cancel'].map((t) => Buffer.from(`{"type":"${t}"`));

/**
 * Reads WebSocket frames out of one direction of a connection (after the HTTP upgrade): the
 * proxy sees every agent frame the gateway was handed, which is how the checker counts what
 * actually ran and what each agent reported. Frames are decoded where they are written on, so
 * bytes a cut throws away are never counted as delivered.
 */
class FrameTap {
  private buf: Buffer = Buffer.alloc(0);
  private upgraded = false;
  private parts: Buffer[] = [];

  constructor(private readonly emit: (payload: Buffer) => void) {}

  push(data: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data;
    if (!this.upgraded) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      this.upgraded = true;
      this.buf = this.buf.subarray(end + 4);
    }
    for (;;) {
      if (this.buf.length < 2) return;
      const b0 = this.buf[0]!;
      const b1 = this.buf[1]!;
      let len = b1 & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      const masked = (b1 & 0x80) !== 0;
      const key = masked ? this.buf.subarray(off, off + 4) : undefined;
      if (masked) off += 4;
      if (this.buf.length < off + len) return;
      const opcode = b0 & 0x0f;
      if (opcode === 0x1 || opcode === 0x0) {
        const payload = Buffer.from(this.buf.subarray(off, off + len));
        if (key) for (let i = 0; i < payload.length; i++) payload[i]! ^= key[i & 3]!;
        this.parts.push(payload);
        if (b0 & 0x80) {
          this.emit(this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts));
          this.parts = [];
        }
      }
      this.buf = this.buf.subarray(off + len);
    }
  }
}

/**
 * What these kernels lack netem for: a TCP proxy between one agent and the gateway that can
 * delay every chunk, stall (hold everything, both ways, sockets left open), and cut every
 * connection at once (buffered bytes are thrown away, as a dying middlebox would).
 */
export class FaultProxy {
  private server?: Server;
  private readonly pairs = new Set<{ a: Socket; g: Socket }>();
  private delayMs = 0;
  private stalled = false;
  private readonly waiting = new Set<() => void>();

  constructor(
    private readonly o: {
      agent: string;
      listenHost: string;
      gatewayPort: number;
      onFrame: (f: WireFrame) => void;
    },
  ) {}

  listen(): Promise<number> {
    const server = createServer((a) => this.accept(a));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, this.o.listenHost, () => resolve((server.address() as { port: number }).port));
    });
  }

  /** Every chunk from now on waits `ms` (order kept). 0 ends the delay. */
  delay(ms: number): void {
    this.delayMs = ms;
  }

  /** Holds every byte both ways until `stall(false)`. */
  stall(on: boolean): void {
    this.stalled = on;
    if (!on) for (const w of [...this.waiting]) w();
  }

  /** Drops every connection now (both sockets destroyed, buffered bytes lost). */
  cut(): number {
    const n = this.pairs.size;
    for (const p of [...this.pairs]) {
      p.a.destroy();
      p.g.destroy();
    }
    return n;
  }

  close(): Promise<void> {
    this.cut();
    this.stall(false);
    return new Promise((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  private accept(a: Socket): void {
    const g = createConnection({ host: '127.0.0.1', port: this.o.gatewayPort });
    const pair = { a, g };
    this.pairs.add(pair);
    const end = () => {
      this.pairs.delete(pair);
      a.destroy();
      g.destroy();
    };
    a.on('error', end).on('close', end);
    g.on('error', end).on('close', end);
    this.pipe(a, g, 'up');
    this.pipe(g, a, 'down');
  }

  /** Forwards `from` → `to` through the delay and stall, decoding frames as they are written on. */
  private pipe(from: Socket, to: Socket, dir: 'up' | 'down'): void {
    const tap = new FrameTap((payload) => {
      if (!TAPPED.some((p) => payload.subarray(0, p.length).equals(p))) return;
      try {
        const m = JSON.parse(payload.toString()) as { type: string; jobId?: string; fence?: number; result?: { reason?: string; exitCode?: number | null } };
        this.o.onFrame({ at: Date.now(), agent: this.o.agent, dir, type: m.type, jobId: m.jobId, fence: m.fence, reason: m.result?.reason, exitCode: m.result?.exitCode });
      } catch {
        /* not JSON: the gateway will say so */
      }
    });
    const queue: Array<{ data: Buffer; at: number }> = [];
    let pumping = false;
    const pump = async () => {
      if (pumping) return;
      pumping = true;
      while (queue.length > 0 && !to.destroyed) {
        if (this.stalled) await new Promise<void>((r) => this.waiting.add(r)).finally(() => this.waiting.clear());
        const next = queue[0]!;
        const wait = next.at - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        if (this.stalled) continue;
        queue.shift();
        if (to.destroyed) break;
        tap.push(next.data);
        if (!to.write(next.data)) {
          from.pause();
          to.once('drain', () => from.resume());
        }
      }
      pumping = false;
    };
    from.on('data', (data: Buffer) => {
      queue.push({ data, at: Date.now() + this.delayMs });
      void pump();
    });
  }
}
