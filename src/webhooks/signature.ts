import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Standard Webhooks signatures (https://www.standardwebhooks.com): HMAC-SHA256 over
 * `${id}.${timestamp}.${body}` with the secret's bytes (the base64 after `whsec_`), sent as
 * `v1,<base64 signature>`; a `webhook-signature` header may carry several, space-separated.
 * Triggers verify them; callbacks are signed with them.
 */
export const SECRET_PREFIX = 'whsec_';
/** Timestamps further than this from now, either way, are refused. */
export const TOLERANCE_SECONDS = 5 * 60;

/** A new `whsec_` secret of 32 random bytes. */
export function newSecret(): string {
  return SECRET_PREFIX + randomBytes(32).toString('base64');
}

/** The key bytes of a `whsec_` secret. */
export function secretBytes(secret: string): Buffer {
  return Buffer.from(secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret, 'base64');
}

/** The `v1,…` signature of one message. `body` is the raw bytes as sent. */
export function sign(secret: string, id: string, timestamp: number, body: Buffer | string): string {
  const mac = createHmac('sha256', secretBytes(secret));
  mac.update(`${id}.${timestamp}.`);
  mac.update(body);
  return `v1,${mac.digest('base64')}`;
}

export type VerifyFailure = 'missing' | 'timestamp' | 'signature';

/**
 * Checks a `webhook-signature` header against any of `secrets` (a rotated-out secret stays valid
 * for a while). Every candidate is compared in constant time, and every secret is tried whatever
 * matched first, so the time taken does not tell which part was wrong.
 */
export function verify(
  secrets: readonly string[],
  h: { id: string | undefined; timestamp: string | undefined; signature: string | undefined },
  body: Buffer,
  nowSeconds: number,
): { ok: true } | { ok: false; why: VerifyFailure } {
  if (!h.id || !h.timestamp || !h.signature || h.id.length > 256 || h.signature.length > 4096) return { ok: false, why: 'missing' };
  if (!/^\d{1,12}$/.test(h.timestamp)) return { ok: false, why: 'timestamp' };
  const ts = Number(h.timestamp);
  if (Math.abs(nowSeconds - ts) > TOLERANCE_SECONDS) return { ok: false, why: 'timestamp' };
  const offered = h.signature
    .split(' ')
    .filter((s) => s.startsWith('v1,'))
    .slice(0, 16)
    .map((s) => Buffer.from(s.slice(3), 'base64'));
  let ok = false;
  for (const secret of secrets) {
    const expected = Buffer.from(sign(secret, h.id, ts, body).slice(3), 'base64');
    for (const o of offered) if (o.length === expected.length && timingSafeEqual(o, expected)) ok = true;
  }
  return ok ? { ok: true } : { ok: false, why: 'signature' };
}
