import { connect, type Socket } from 'node:net';
import { EventEmitter } from 'node:events';

/** Frame types of corral-exec's wire format (see corral-exec.c). */
const T = { RUN: 1, KILL: 2, READY: 10, OUT: 12, ERR: 13, EXIT: 14 } as const;

export interface ExecRequest {
  argv: string[];
  env: Record<string, string>;
  stdin?: Buffer;
}

export interface ExecEvents {
  ready: [];
  stdout: [Buffer];
  stderr: [Buffer];
  exit: [status: { code: number | null; signal: number | null }];
  close: [];
}

/** Decodes a wait(2) status. */
export function decodeStatus(st: number): { code: number | null; signal: number | null } {
  const sig = st & 0x7f;
  return sig === 0 ? { code: (st >> 8) & 0xff, signal: null } : { code: null, signal: sig };
}

function encodeRun(r: ExecRequest): Buffer {
  const parts: Buffer[] = [];
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n);
    return b;
  };
  parts.push(u32(r.argv.length));
  for (const a of r.argv) parts.push(Buffer.from(a + '\0'));
  const env = Object.entries(r.env);
  parts.push(u32(env.length));
  for (const [k, v] of env) parts.push(Buffer.from(`${k}=${v}\0`));
  if (r.stdin) parts.push(r.stdin);
  return Buffer.concat(parts);
}

function frame(type: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32LE(payload.length);
  head[4] = type;
  return Buffer.concat([head, payload]);
}

/**
 * A connection to one container's resident executor. One run at a time; events come in order:
 * stdout/stderr…, exit.
 */
export class ExecClient extends EventEmitter<ExecEvents> {
  private buf: Buffer = Buffer.alloc(0);
  private ready = false;

  private constructor(private readonly sock: Socket) {
    super();
    sock.on('data', (d) => this.onData(d));
    sock.on('close', () => this.emit('close'));
    sock.on('error', () => sock.destroy());
  }

  /** Connects and waits for the executor's READY, retrying while the socket is not there yet. */
  static async connect(path: string, timeoutMs = 5000): Promise<ExecClient> {
    const deadline = Date.now() + timeoutMs;
    for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
      try {
        return await ExecClient.connectOnce(path, Math.max(1, deadline - Date.now()));
      } catch (err) {
        if (Date.now() + delay >= deadline) throw err;
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private static connectOnce(path: string, timeoutMs: number): Promise<ExecClient> {
    return new Promise((resolve, reject) => {
      const sock = connect(path);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`executor at ${path} did not answer`));
      }, timeoutMs);
      const fail = (err: Error) => {
        clearTimeout(timer);
        reject(err);
      };
      sock.once('error', fail);
      sock.once('connect', () => {
        const client = new ExecClient(sock);
        sock.off('error', fail);
        client.once('ready', () => {
          clearTimeout(timer);
          resolve(client);
        });
      });
    });
  }

  run(r: ExecRequest): void {
    if (!this.ready) throw new Error('executor not ready');
    this.sock.write(frame(T.RUN, encodeRun(r)));
  }

  kill(signal: number): void {
    if (!this.sock.destroyed) this.sock.write(frame(T.KILL, Buffer.from([signal])));
  }

  get alive(): boolean {
    return !this.sock.destroyed;
  }

  close(): void {
    this.sock.destroy();
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    while (this.buf.length >= 5) {
      const len = this.buf.readUInt32LE(0);
      if (this.buf.length < 5 + len) return;
      const type = this.buf[4];
      const payload = this.buf.subarray(5, 5 + len);
      this.buf = this.buf.subarray(5 + len);
      switch (type) {
        case T.READY:
          this.ready = true;
          this.emit('ready');
          break;
        case T.OUT:
          this.emit('stdout', Buffer.from(payload));
          break;
        case T.ERR:
          this.emit('stderr', Buffer.from(payload));
          break;
        case T.EXIT:
          this.emit('exit', decodeStatus(payload.readInt32LE(0)));
          break;
      }
    }
  }
}
