import { connect, type Socket } from 'node:net';
import { EventEmitter } from 'node:events';

/** Frame types of corral-exec's wire format (see corral-exec.c). */
const T = { RUN: 1, KILL: 2, READY: 10, OUT: 12, ERR: 13, EXIT: 14 } as const;
/** The executor protocol this agent speaks; READY must announce it. */
export const EXEC_PROTOCOL = 2;
const F_FILTER = 1;
const X_CLEAN = 1;
const X_TRUNCATED = 2;
/** Largest output frame the executor sends (its coalescing buffer). */
export const MAX_OUT_FRAME = 64 * 1024;
/** Largest RUN frame the executor reads (MAX_FRAME in corral-exec.c). */
export const MAX_RUN_FRAME = 4 * 1024 * 1024;

export interface ExecRequest {
  argv: string[];
  env: Record<string, string>;
  stdin?: Buffer;
  /** Who the job runs as inside the container (0 only for images that opt in to root). */
  uid: number;
  gid: number;
  /** Bytes of output (stdout and stderr together) the executor forwards; the rest it drops. */
  outputBudget: number;
}

export interface ExitStatus {
  code: number | null;
  signal: number | null;
  /** The executor killed and reaped everything the job left: the container may be reused. */
  clean: boolean;
  truncated: boolean;
}

export interface ExecEvents {
  ready: [];
  stdout: [Buffer];
  stderr: [Buffer];
  exit: [ExitStatus];
  close: [];
}

/** Decodes a wait(2) status. */
export function decodeStatus(st: number): { code: number | null; signal: number | null } {
  const sig = st & 0x7f;
  return sig === 0 ? { code: (st >> 8) & 0xff, signal: null } : { code: null, signal: sig };
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

function encodeRun(r: ExecRequest): Buffer {
  const head = Buffer.alloc(20);
  head.writeUInt32LE(r.uid, 0);
  head.writeUInt32LE(r.gid, 4);
  head.writeBigUInt64LE(BigInt(Math.min(Math.max(0, Math.floor(r.outputBudget)), Number.MAX_SAFE_INTEGER)), 8);
  head.writeUInt32LE(r.argv.length, 16);
  const parts: Buffer[] = [head];
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

/** Exact payload bounds per frame type the executor may send: [min, max]. */
const BOUNDS: Record<number, [number, number]> = {
  [T.READY]: [8, 8],
  [T.OUT]: [1, MAX_OUT_FRAME],
  [T.ERR]: [1, MAX_OUT_FRAME],
  [T.EXIT]: [8, 8],
};

/**
 * A connection to one container's resident executor. One run at a time; events come in order:
 * stdout/stderr…, exit.
 *
 * Everything the executor sends is checked: a frame type it may not send, a length outside that
 * type's bounds, a frame out of turn (output or an exit with no run, a second READY), output past
 * the run's budget, or a READY without the job filter. Any of these marks the client `failure`
 * and closes the socket; the runner then ends that one attempt and destroys that one container.
 * The receive buffer never holds more than one frame's bound plus one read.
 */
export class ExecClient extends EventEmitter<ExecEvents> {
  private buf: Buffer = Buffer.alloc(0);
  private ready = false;
  private running = false;
  private outputLeft = 0;
  /** Why the client gave up on the executor, once it has. */
  failure: string | undefined;

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
        if (err instanceof ExecutorRefused || Date.now() + delay >= deadline) throw err;
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
        client.once('close', () => {
          clearTimeout(timer);
          reject(client.failure ? new ExecutorRefused(client.failure) : new Error(`executor at ${path} closed before it was ready`));
        });
      });
    });
  }

  run(r: ExecRequest): void {
    if (!this.ready || this.running) throw new Error('executor not ready');
    const payload = encodeRun(r);
    if (payload.length > MAX_RUN_FRAME) throw new Error(`run request of ${payload.length} bytes exceeds the executor's ${MAX_RUN_FRAME}`);
    this.running = true;
    this.outputLeft = r.outputBudget;
    this.sock.write(frame(T.RUN, payload));
  }

  /** Signals every process in the container but the executor. */
  kill(signal: number): void {
    if (!this.sock.destroyed) this.sock.write(frame(T.KILL, Buffer.from([signal])));
  }

  get alive(): boolean {
    return !this.sock.destroyed;
  }

  close(): void {
    this.sock.destroy();
  }

  private violate(why: string): void {
    this.failure ??= `executor protocol violation: ${why}`;
    this.buf = Buffer.alloc(0);
    this.sock.destroy();
  }

  private onData(d: Buffer): void {
    if (this.failure) return;
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    while (this.buf.length >= 5 && !this.failure) {
      const len = this.buf.readUInt32LE(0);
      const type = this.buf[4]!;
      const bounds = BOUNDS[type];
      if (!bounds) return this.violate(`unknown frame type ${type}`);
      if (len < bounds[0] || len > bounds[1]) return this.violate(`frame type ${type} with ${len} bytes`);
      if (this.buf.length < 5 + len) return;
      const payload = this.buf.subarray(5, 5 + len);
      this.buf = this.buf.subarray(5 + len);
      this.dispatch(type, payload);
    }
  }

  private dispatch(type: number, payload: Buffer): void {
    if (type === T.READY) {
      if (this.ready) return this.violate('a second READY');
      const version = payload.readUInt32LE(0);
      if (version !== EXEC_PROTOCOL) return this.violate(`executor speaks protocol ${version}, not ${EXEC_PROTOCOL}`);
      // A kernel that refuses the job's seccomp filter would run jobs unfiltered: never start such a container.
      if ((payload.readUInt32LE(4) & F_FILTER) === 0) {
        this.failure = 'the kernel refused the job seccomp filter: this host cannot run jobs safely';
        return void this.sock.destroy();
      }
      this.ready = true;
      return void this.emit('ready');
    }
    if (!this.running) return this.violate(`frame type ${type} with no job running`);
    if (type === T.EXIT) {
      this.running = false;
      const flags = payload.readUInt32LE(4);
      return void this.emit('exit', { ...decodeStatus(payload.readInt32LE(0)), clean: (flags & X_CLEAN) !== 0, truncated: (flags & X_TRUNCATED) !== 0 });
    }
    this.outputLeft -= payload.length;
    if (this.outputLeft < 0) return this.violate('output past the run budget');
    this.emit(type === T.OUT ? 'stdout' : 'stderr', Buffer.from(payload));
  }
}

/** The executor answered but must not be used (wrong protocol, no seccomp): retrying will not help. */
export class ExecutorRefused extends Error {}
