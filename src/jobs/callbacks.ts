import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import type { JobMachine } from '../queue/machine.js';
import type { JobService } from './service.js';

const TIMEOUT_MS = 5000;
const DELAYS_MS = [0, 1000, 5000];

/** Loopback, private, link-local, CGNAT, multicast and unspecified addresses: not for callbacks by default. */
export function isPrivateAddress(ip: string): boolean {
  if (isIP(ip) === 6) {
    const v = ip.toLowerCase();
    if (v.startsWith('::ffff:')) return isPrivateAddress(v.slice(7));
    return v === '::1' || v === '::' || /^f[cd]/.test(v) || /^fe[89ab]/.test(v) || v.startsWith('ff');
  }
  const [a, b] = ip.split('.').map(Number) as [number, number];
  return a === 10 || a === 127 || a === 0 || (a === 169 && b === 254) || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b <= 127) || a >= 224;
}

export interface CallbackOptions {
  allowPrivate: boolean;
  log: Logger;
  fetch?: typeof fetch;
  /** Resolves once what was committed so far is on disk: a callback never reports an end a crash could undo. */
  durable?: () => Promise<void>;
}

/**
 * Tells a job's `callbackUrl` that the job ended: a POST of the finished job as JSON, with
 * `webhook-id` (the job id) and `webhook-timestamp` headers, tried three times (now, +1 s, +5 s)
 * with a 5 s timeout and no redirects. Addresses inside the gateway's own networks are refused
 * unless allowed, so a tenant cannot make the gateway call its neighbours.
 */
export class Callbacks {
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    machine: JobMachine,
    private readonly jobs: JobService,
    private readonly o: CallbackOptions,
  ) {
    machine.on('job:ended', ({ jobId, tenant }) => {
      const url = this.jobs.callbackUrlOf(tenant, jobId);
      if (!url) return; // none, or the job was deleted
      const p = this.deliver(tenant, jobId, url).finally(() => this.inFlight.delete(p));
      this.inFlight.add(p);
    });
  }

  private async deliver(tenant: string, jobId: string, url: string): Promise<void> {
    const f = this.o.fetch ?? fetch;
    await this.o.durable?.();
    for (const delay of DELAYS_MS) {
      if (delay) await new Promise((r) => setTimeout(r, delay).unref());
      try {
        await this.checkTarget(url);
        const body = JSON.stringify(this.jobs.get(tenant, jobId));
        const res = await f(url, {
          method: 'POST',
          redirect: 'manual',
          signal: AbortSignal.timeout(TIMEOUT_MS),
          headers: { 'content-type': 'application/json', 'user-agent': 'corral-callback/1', 'webhook-id': jobId, 'webhook-timestamp': String(Math.floor(Date.now() / 1000)) },
          body,
        });
        if (res.status >= 200 && res.status < 300) return;
        this.o.log.warn({ jobId, status: res.status }, 'callback answered with an error');
      } catch (err) {
        this.o.log.warn({ jobId, err: (err as Error).message }, 'callback failed');
        if (err instanceof RefusedTarget) return;
      }
    }
  }

  private async checkTarget(url: string): Promise<void> {
    if (this.o.allowPrivate) return;
    const host = new URL(url).hostname.replace(/^\[|\]$/g, '');
    const addresses = isIP(host) ? [host] : (await lookup(host, { all: true })).map((a) => a.address);
    if (addresses.some(isPrivateAddress)) throw new RefusedTarget(`callback host ${host} resolves to a private address`);
  }

  /** Waits for deliveries under way (tests and shutdown). */
  async settle(): Promise<void> {
    await Promise.all([...this.inFlight]);
  }
}

class RefusedTarget extends Error {}
