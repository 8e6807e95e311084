import { EventEmitter } from 'node:events';
import type { JobView } from '../jobs/view.js';
import type { JobMachine } from '../queue/machine.js';
import { sign } from '../webhooks/signature.js';
import type { CallbackOutbox, DueDelivery, TryOutcome } from './outbox.js';
import { DEFAULT_SCHEDULE, backoffMs, retryAfterMs, type RetrySchedule } from './schedule.js';
import type { CallbackSecrets } from './secrets.js';
import { RefusedTarget, post, resolveTarget, type Answer, type Resolver, type Sender } from './target.js';

export interface DelivererEvents {
  /** One try ended (whatever its outcome); `bytesRead` is how much of the answer's body was read. */
  'callback:tried': [{ id: string; jobId: string; n: number; outcome: TryOutcome; bytesRead: number }];
  /** Something went wrong outside a try (the database, a secret): the loop goes on. */
  'callback:error': [{ error: Error }];
}

export interface DelivererOptions {
  outbox: CallbackOutbox;
  secrets: CallbackSecrets;
  /** The job as the callback's `data` (undefined: the job is gone). */
  jobView: (tenant: string, jobId: string) => JobView | undefined;
  /** Resolves once everything committed so far is on disk: no delivery reports an end a crash could undo. */
  durable: () => Promise<void>;
  allowPrivate: boolean;
  /** Wakes the loop as soon as a job ends (it also polls every `pollMs`). */
  machine?: JobMachine;
  clock?: () => number;
  random?: () => number;
  resolve?: Resolver;
  send?: Sender;
  /** Tries under way at once (8). */
  concurrency?: number;
  /**
   * Tries under way at once for one tenant (half of `concurrency`): a tenant whose receivers all
   * hang cannot hold every slot and stall everyone else's callbacks.
   */
  perTenant?: number;
  /** How often due retries are looked for (1 s). */
  pollMs?: number;
  /** One try, connect to last byte (8 s). */
  timeoutMs?: number;
  /** Answer body bytes read at most (4 KiB). */
  maxBodyBytes?: number;
  schedule?: Partial<RetrySchedule>;
}

const ERROR_CHARS = 300;

/** A receiver's words, made safe to store and show: control characters out, bounded. */
function snippet(buf: Buffer): string {
  return buf
    .toString('utf8')
    .replace(/[\0-\x1f\x7f]+/g, ' ')
    .trim()
    .slice(0, 200);
}

/**
 * Works the callback outbox: picks due `pending` deliveries, at most `concurrency` at once, and
 * POSTs `{"type":"job.ended","timestamp":…,"data":<job>}` to each, signed per Standard Webhooks
 * with the tenant's callback secret(s). `webhook-id` is the delivery id, the same on every try,
 * so a receiver can drop repeats. 2xx → delivered; 410 → gone; anything else (a 3xx included:
 * redirects are not followed) is tried again on the schedule, 429/503 after their Retry-After;
 * a target that may never be reached (a private address) fails at once.
 *
 * Nothing here throws out of the loop: errors become `callback:error` events.
 *
 * @example
 *   const d = new CallbackDeliverer({ outbox, secrets, jobView, durable: store.durable, allowPrivate: false, machine });
 *   d.start(); … await d.stop();
 */
export class CallbackDeliverer extends EventEmitter<DelivererEvents> {
  private readonly clock: () => number;
  private readonly random: () => number;
  private readonly send: Sender;
  private readonly concurrency: number;
  private readonly perTenant: number;
  private readonly tenantLoad = new Map<string, number>();
  private readonly pollMs: number;
  private readonly timeoutMs: number;
  private readonly maxBodyBytes: number;
  private readonly schedule: RetrySchedule;
  private readonly inFlight = new Map<string, Promise<void>>();
  private abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private kicked = false;
  private readonly wake = () => this.kick();

  constructor(private readonly o: DelivererOptions) {
    super();
    this.clock = o.clock ?? Date.now;
    this.random = o.random ?? Math.random;
    this.send = o.send ?? post;
    this.concurrency = o.concurrency ?? 8;
    this.perTenant = o.perTenant ?? Math.max(1, Math.floor(this.concurrency / 2));
    this.pollMs = o.pollMs ?? 1000;
    this.timeoutMs = o.timeoutMs ?? 8000;
    this.maxBodyBytes = o.maxBodyBytes ?? 4096;
    this.schedule = { ...DEFAULT_SCHEDULE, ...o.schedule };
  }

  /** Starts polling; deliveries left pending by an earlier run are due at once. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.abort = new AbortController();
    this.o.machine?.on('job:ended', this.wake);
    this.timer = setInterval(() => this.kick(), this.pollMs);
    this.timer.unref();
    this.kick();
  }

  /**
   * Stops polling and cuts tries under way short; their deliveries stay pending, due at once,
   * for the next start (the try is not counted: the receiver may or may not have seen it, and
   * `webhook-id` lets it tell).
   */
  async stop(): Promise<void> {
    this.running = false;
    this.o.machine?.off('job:ended', this.wake);
    clearInterval(this.timer);
    this.abort.abort();
    await Promise.allSettled([...this.inFlight.values()]);
  }

  private kick(): void {
    if (!this.running || this.kicked) return;
    this.kicked = true;
    setImmediate(() => {
      this.kicked = false;
      if (this.running) void this.runOnce();
    });
  }

  /**
   * Starts every due delivery there is room for and resolves when those tries have ended.
   * Returns how many were started.
   */
  async runOnce(): Promise<number> {
    const picked: DueDelivery[] = [];
    try {
      const room = this.concurrency - this.inFlight.size;
      if (room <= 0) return 0;
      const now = this.clock();
      // Looks past the first due rows, so that one tenant's backlog does not hide another's.
      for (const d of this.o.outbox.due(now, room * 16, this.perTenant)) {
        const load = this.tenantLoad.get(d.tenant) ?? 0;
        if (this.inFlight.has(d.id) || load >= this.perTenant) continue;
        this.tenantLoad.set(d.tenant, load + 1);
        picked.push(d);
        if (picked.length === room) break;
      }
      // Held for the longest a try can take, plus slack: a crash mid-try retries after that.
      for (const d of picked) this.o.outbox.lease(d.id, now + this.timeoutMs + 30_000);
    } catch (err) {
      for (const d of picked) this.release(d);
      this.emit('callback:error', { error: err as Error });
      return 0;
    }
    const tries = picked.map((d) => {
      const p = this.deliver(d)
        .catch((err: unknown) => void this.emit('callback:error', { error: err as Error }))
        .finally(() => {
          this.inFlight.delete(d.id);
          this.release(d);
        });
      this.inFlight.set(d.id, p);
      return p;
    });
    await Promise.all(tries);
    return picked.length;
  }

  private release(d: DueDelivery): void {
    const load = (this.tenantLoad.get(d.tenant) ?? 1) - 1;
    if (load > 0) this.tenantLoad.set(d.tenant, load);
    else this.tenantLoad.delete(d.tenant);
  }

  private async deliver(d: DueDelivery): Promise<void> {
    // The rows were committed before they were read; this waits for them (the job's end with
    // them) to be on disk, so no receiver hears of an end that a power cut could take back.
    await this.o.durable();
    const signal = this.abort.signal;
    if (signal.aborted) return this.o.outbox.lease(d.id, this.clock());
    const n = d.tries + 1;
    const at = this.clock();
    const started = performance.now();
    const took = () => Math.round(performance.now() - started);
    const job = this.o.jobView(d.tenant, d.jobId);
    if (!job) return; // deleted since it was picked; its delivery went with it
    let answer: Answer | undefined;
    let error: string | undefined;
    let final = false;
    try {
      const target = await resolveTarget(d.url, { allowPrivate: this.o.allowPrivate, resolve: this.o.resolve });
      const body = JSON.stringify({ type: 'job.ended', timestamp: new Date(d.createdAt).toISOString(), data: job });
      const ts = Math.floor(this.clock() / 1000);
      const secrets = await this.o.secrets.signing(d.tenant, this.clock());
      const headers = {
        'content-type': 'application/json',
        'user-agent': 'corral-callback/1',
        'webhook-id': d.id,
        'webhook-timestamp': String(ts),
        'webhook-signature': secrets.map((s) => sign(s, d.id, ts, body)).join(' '),
      };
      answer = await this.send(target, body, headers, { timeoutMs: this.timeoutMs, maxBodyBytes: this.maxBodyBytes, signal });
    } catch (err) {
      if (signal.aborted) {
        this.o.outbox.lease(d.id, this.clock());
        return;
      }
      error = (err as Error).message.slice(0, ERROR_CHARS);
      final = err instanceof RefusedTarget;
    }
    const outcome = this.decide(d, n, at, took(), answer, error, final);
    this.o.outbox.recordTry(d.id, n, outcome);
    this.emit('callback:tried', { id: d.id, jobId: d.jobId, n, outcome, bytesRead: answer?.bytesRead ?? 0 });
  }

  /** What a try's answer means for its delivery. The one place the retry decision is made. */
  private decide(d: DueDelivery, n: number, at: number, durationMs: number, a: Answer | undefined, error: string | undefined, final: boolean): TryOutcome {
    const base = { at, durationMs, status: a?.status ?? null };
    if (a && a.status >= 200 && a.status < 300) return { ...base, error: null, state: 'delivered', nextAt: at };
    if (a && a.status === 410) return { ...base, error: `the receiver answered 410 Gone${a.bodyPrefix.length ? `: ${snippet(a.bodyPrefix)}` : ''}`, state: 'gone', nextAt: at };
    if (a) {
      const what = a.status >= 300 && a.status < 400 ? ' (redirects are not followed)' : a.bodyPrefix.length ? `: ${snippet(a.bodyPrefix)}` : '';
      error = `the receiver answered ${a.status}${what}`;
    }
    if (final) return { ...base, error: error ?? 'refused', state: 'failed', nextAt: at };
    const s = this.schedule;
    const honoured = a && (a.status === 429 || a.status === 503) ? retryAfterMs(a.retryAfter, at, s) : undefined;
    const nextAt = at + (honoured ?? backoffMs(n, s, this.random));
    if (n >= s.maxTries || nextAt > d.createdAt + s.maxAgeMs) {
      return { ...base, error: `${error ?? 'failed'}; giving up after ${n} tries`, state: 'failed', nextAt: at };
    }
    return { ...base, error: error ?? 'failed', state: 'pending', nextAt };
  }
}
