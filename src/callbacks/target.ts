import { lookup as dnsLookup } from 'node:dns/promises';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Logger } from 'pino';
import type { JobMachine } from '../queue/machine.js';
import type { JobService } from './service.js';

const TIMEOUT_MS = 5000;
const DELAYS_MS = [0, 1000, 5000];

/**
 * Whether `ip` is a public unicast address: the only kind a callback may reach by default.
 * Classified by ipaddr.js's IANA special-purpose tables, which it keeps current, rather than a
 * hand-written list (which had missed ranges such as 198.18/15 benchmarking, 192.0.0/24,
 * 240/4 and the IPv6 discard and documentation blocks). An IPv4-mapped IPv6 address is judged
 * as the IPv4 address it carries. The ranges that embed an IPv4 address in IPv6 — 6to4,
 * Teredo, NAT64 (RFC 6052/6145) — are not 'unicast' and are refused outright: through a relay
 * or translator on the gateway's network they could reach any IPv4 address, private included.
 * Anything that does not parse is not public.
 */
export function isPublicAddress(ip: string): boolean {
  if (!ipaddr.isValid(ip)) return false;
  let addr = ipaddr.parse(ip);
  if (addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress()) addr = (addr as ipaddr.IPv6).toIPv4Address();
  return addr.range() === 'unicast';
}

/** A name resolved to addresses, as `dns.lookup(host, { all: true })` answers. */
export type Resolver = (host: string) => Promise<Array<{ address: string; family: number }>>;

export interface CallbackOptions {
  allowPrivate: boolean;
  log: Logger;
  /** Resolves callback host names (tests inject one); the connection goes to the address it returned. */
  resolve?: Resolver;
  timeoutMs?: number;
  /** Delays before each try (the first is usually 0). */
  delaysMs?: readonly number[];
  /** Resolves once what was committed so far is on disk: a callback never reports an end a crash could undo. */
  durable?: () => Promise<void>;
}

const systemResolver: Resolver = (host) => dnsLookup(host, { all: true, verbatim: true });

/**
 * Tells a job's `callbackUrl` that the job ended: a POST of the finished job as JSON, with
 * `webhook-id` (the job id) and `webhook-timestamp` headers, tried three times (now, +1 s, +5 s)
 * with a 5 s timeout. Unless the gateway allows private targets, the host is resolved here,
 * every address it resolves to must be public, and the connection is pinned to the address
 * that was checked (the HTTP client's `lookup` answers with it), so a name that resolves
 * differently a moment later (DNS rebinding) cannot steer the request inside. Redirects are
 * not followed: the Location could name any address, so a 3xx is a refusal.
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
    await this.o.durable?.();
    for (const delay of this.o.delaysMs ?? DELAYS_MS) {
      if (delay) await new Promise((r) => setTimeout(r, delay).unref());
      try {
        const target = await this.target(url);
        const body = JSON.stringify(this.jobs.get(tenant, jobId));
        const status = await this.post(target, body, jobId);
        if (status >= 200 && status < 300) return;
        if (status >= 300 && status < 400) throw new RefusedTarget(`callback answered ${status}; redirects are not followed`);
        this.o.log.warn({ jobId, status }, 'callback answered with an error');
      } catch (err) {
        this.o.log.warn({ jobId, err: (err as Error).message }, 'callback failed');
        if (err instanceof RefusedTarget) return;
      }
    }
  }

  /** The URL and the one address to connect to, checked. */
  private async target(text: string): Promise<{ url: URL; address: string; family: 4 | 6 }> {
    const url = new URL(text);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new RefusedTarget(`callback scheme ${url.protocol} is not http or https`);
    if (url.username || url.password) throw new RefusedTarget('callback URL carries credentials');
    // WHATWG URL parsing has already turned 0177.0.0.1, 0x7f000001, 2130706433 and 127.1 into 127.0.0.1.
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const answers = ipaddr.isValid(host) ? [{ address: host, family: host.includes(':') ? 6 : 4 }] : await (this.o.resolve ?? systemResolver)(host);
    if (answers.length === 0) throw new Error(`callback host ${host} resolves to no address`);
    if (!this.o.allowPrivate) {
      const inside = answers.find((a) => !isPublicAddress(a.address));
      if (inside) throw new RefusedTarget(`callback host ${host} resolves to ${inside.address}, which is not a public address`);
    }
    const first = answers[0]!;
    return { url, address: first.address, family: first.family === 6 ? 6 : 4 };
  }

  /** One POST to the checked address; resolves with the status. */
  private post(t: { url: URL; address: string; family: 4 | 6 }, body: string, jobId: string): Promise<number> {
    // The socket connects to the address checked above whatever the name resolves to now.
    const lookup: LookupFunction = (_host, opts, cb) => {
      if ((opts as { all?: boolean }).all) (cb as unknown as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [{ address: t.address, family: t.family }]);
      else cb(null, t.address, t.family);
    };
    const options: RequestOptions = {
      method: 'POST',
      lookup,
      timeout: this.o.timeoutMs ?? TIMEOUT_MS,
      headers: {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        'user-agent': 'corral-callback/1',
        'webhook-id': jobId,
        'webhook-timestamp': String(Math.floor(Date.now() / 1000)),
      },
    };
    const send = t.url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = send(t.url, options, (res: IncomingMessage) => {
        res.resume(); // the answer's body is not read: only its status counts
        resolve(res.statusCode ?? 0);
      });
      req.on('timeout', () => req.destroy(new Error('callback timed out')));
      req.on('error', reject);
      req.end(body);
    });
  }

  /** Waits for deliveries under way (tests and shutdown). */
  async settle(): Promise<void> {
    await Promise.all([...this.inFlight]);
  }
}

class RefusedTarget extends Error {}
