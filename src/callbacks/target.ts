import { lookup as dnsLookup } from 'node:dns/promises';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';

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
  if (addr.kind() === 'ipv6') {
    const v6 = addr as ipaddr.IPv6;
    if (v6.isIPv4MappedAddress()) addr = v6.toIPv4Address();
    // IPv4-compatible (::a.b.c.d, deprecated) and site-local (fec0::/10, deprecated): a host with
    // SIT tunnels routes the first to IPv4; neither is a public destination.
    else if (v6.match(ipaddr.IPv6.parse('::'), 96) || v6.match(ipaddr.IPv6.parse('fec0::'), 10)) return false;
  }
  return addr.range() === 'unicast';
}

/** A name resolved to addresses, as `dns.lookup(host, { all: true })` answers. */
export type Resolver = (host: string) => Promise<Array<{ address: string; family: number }>>;

const systemResolver: Resolver = (host) => dnsLookup(host, { all: true, verbatim: true });

/** The target may never be reached as it is (a private address, a bad scheme): trying again will not help. */
export class RefusedTarget extends Error {
  override name = 'RefusedTarget';
}

/** A callback URL and the one address the connection is pinned to, checked. */
export interface Target {
  url: URL;
  address: string;
  family: 4 | 6;
}

/**
 * Resolves and checks a callback URL. Unless `allowPrivate`, every address the host resolves to
 * must be public; the caller connects to the first one only (see `post`), so a name that
 * resolves differently a moment later (DNS rebinding) cannot steer the request inside.
 */
export async function resolveTarget(text: string, o: { allowPrivate: boolean; resolve?: Resolver | undefined }): Promise<Target> {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new RefusedTarget('callback URL does not parse');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new RefusedTarget(`callback scheme ${url.protocol} is not http or https`);
  if (url.username || url.password) throw new RefusedTarget('callback URL carries credentials');
  // WHATWG URL parsing has already turned 0177.0.0.1, 0x7f000001, 2130706433 and 127.1 into 127.0.0.1.
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const answers = ipaddr.isValid(host) ? [{ address: host, family: host.includes(':') ? 6 : 4 }] : await (o.resolve ?? systemResolver)(host);
  if (answers.length === 0) throw new Error(`callback host ${host} resolves to no address`);
  if (!o.allowPrivate) {
    const inside = answers.find((a) => !isPublicAddress(a.address));
    // The address itself is not said: the deliveries a tenant can read would map the gateway's internal DNS.
    if (inside) throw new RefusedTarget(`callback host ${host} is not a public address`);
  }
  const first = answers[0]!;
  return { url, address: first.address, family: first.family === 6 ? 6 : 4 };
}

/** What a receiver answered to one POST. */
export interface Answer {
  status: number;
  /** The `Retry-After` header as sent, if any. */
  retryAfter?: string | undefined;
  /** The start of the answer's body (at most `maxBodyBytes`), for the delivery's record. */
  bodyPrefix: Buffer;
  /** Bytes of body received before the socket was let go (a bounded prefix of what was sent). */
  bytesRead: number;
}

export interface PostLimits {
  /** The whole try, from connect to the last byte read: a receiver that trickles is cut off too. */
  timeoutMs: number;
  /** Body bytes read at most; past this the socket is destroyed. */
  maxBodyBytes: number;
  signal?: AbortSignal | undefined;
}

/** One POST to a checked target; the deliverer takes one of these so tests can watch what is sent. */
export type Sender = (target: Target, body: string, headers: Record<string, string>, limits: PostLimits) => Promise<Answer>;

/**
 * POSTs `body` to the address checked in `target`, whatever the name resolves to now (the
 * client's `lookup` answers with that address), on a connection of its own (a pooled socket
 * would outlive the check). Redirects are not followed: the 3xx is the answer. Resolves as soon
 * as the status is in and the body has ended, `maxBodyBytes` of it were read, or the deadline
 * passed — whichever is first — and then destroys the socket, so a receiver that sends a huge
 * or endless body costs a few KiB and at most `timeoutMs`.
 */
export const post: Sender = (t, body, headers, limits) => {
  const lookup: LookupFunction = (_host, opts, cb) => {
    if ((opts as { all?: boolean }).all) (cb as unknown as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [{ address: t.address, family: t.family }]);
    else cb(null, t.address, t.family);
  };
  const options: RequestOptions = {
    method: 'POST',
    lookup,
    agent: false,
    headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
  };
  const send = t.url.protocol === 'https:' ? httpsRequest : httpRequest;
  if (limits.signal?.aborted) return Promise.reject(new Error('the gateway is stopping'));
  return new Promise<Answer>((resolve, reject) => {
    let res: IncomingMessage | undefined;
    const chunks: Buffer[] = [];
    let kept = 0;
    let bytesRead = 0;
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      limits.signal?.removeEventListener('abort', onAbort);
      req.destroy();
      if (res) {
        res.destroy();
        resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'], bodyPrefix: Buffer.concat(chunks), bytesRead });
      } else reject(err ?? new Error('no answer'));
    };
    const req = send(t.url, options, (r) => {
      res = r;
      r.on('data', (chunk: Buffer) => {
        bytesRead += chunk.length;
        if (kept < limits.maxBodyBytes) {
          const part = chunk.subarray(0, limits.maxBodyBytes - kept);
          chunks.push(part);
          kept += part.length;
        }
        if (bytesRead >= limits.maxBodyBytes) finish();
      });
      r.on('end', () => finish());
      r.on('error', () => finish());
      r.on('aborted', () => finish());
    });
    const timer = setTimeout(() => finish(new Error(`timed out after ${limits.timeoutMs} ms`)), limits.timeoutMs);
    const onAbort = () => finish(new Error('the gateway is stopping'));
    limits.signal?.addEventListener('abort', onAbort, { once: true });
    req.on('error', (err) => finish(err));
    req.end(body);
  });
};
