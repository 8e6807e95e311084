import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { TOLERANCE_SECONDS } from '../webhooks/signature.js';

/**
 * The checks behind `POST /hooks/:id`. Unlike `verify()` in src/webhooks/signature.ts, these
 * never return early: every header is parsed, both keys are used and every offered signature is
 * compared whatever failed first, so the time a request takes does not tell a missing header, a
 * stale timestamp, a wrong signature or an unknown trigger apart.
 */

/** Longest delivery id kept (`webhook-id`, `X-GitHub-Delivery`); also what CORRAL_DELIVERY_ID can hold. */
export const MAX_DELIVERY_ID_LENGTH = 256;
const MAX_SIGNATURE_HEADER = 4096;
/** Signatures looked at in one `webhook-signature` header (a sender rotating keys sends two or three). */
const MAX_SIGNATURES = 16;
const DELIVERY_ID = /^[\x21-\x7e]+$/;
const TIMESTAMP = /^\d{1,12}$/;
const GITHUB_SIGNATURE = /^sha256=([0-9a-fA-F]{64})$/;

/** A delivery id is printable ASCII without spaces, 1..256 characters. */
export function validDeliveryId(id: string | undefined): id is string {
  return id !== undefined && id.length > 0 && id.length <= MAX_DELIVERY_ID_LENGTH && DELIVERY_ID.test(id);
}

/** Two keys are always checked: the current one and the previous one (or filler when there is none). */
export type KeyPair = readonly [Buffer, Buffer];

/** 32 random bytes that stand in for a key nobody has: a missing previous key, an unknown trigger's. */
export const fillerKey = () => randomBytes(32);

/**
 * Standard Webhooks: HMAC-SHA256 of `${webhook-id}.${webhook-timestamp}.${body}`, base64, offered
 * as `v1,<sig>` among space-separated signatures; the timestamp within 5 minutes of `nowSeconds`
 * either way (300 s is still in).
 */
export function standardOk(
  keys: KeyPair,
  h: { id: string | undefined; timestamp: string | undefined; signature: string | undefined },
  body: Buffer,
  nowSeconds: number,
): boolean {
  const idOk = validDeliveryId(h.id);
  const tsOk = h.timestamp !== undefined && TIMESTAMP.test(h.timestamp) && Math.abs(nowSeconds - Number(h.timestamp)) <= TOLERANCE_SECONDS;
  const header = h.signature !== undefined && h.signature.length <= MAX_SIGNATURE_HEADER ? h.signature : '';
  const offered = header
    .split(' ')
    .filter((s) => s.startsWith('v1,'))
    .slice(0, MAX_SIGNATURES)
    .map((s) => Buffer.from(s.slice(3), 'base64'));
  const prefix = `${idOk ? h.id : ''}.${tsOk ? Number(h.timestamp) : 0}.`;
  let sigOk = false;
  for (const key of keys) {
    const expected = createHmac('sha256', key).update(prefix).update(body).digest();
    for (const o of offered) if (o.length === expected.length && timingSafeEqual(o, expected)) sigOk = true;
  }
  return idOk && tsOk && sigOk;
}

/** GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, the key being the secret's text. */
export function githubOk(keys: KeyPair, signature: string | undefined, body: Buffer): boolean {
  const m = signature !== undefined && signature.length <= 128 ? GITHUB_SIGNATURE.exec(signature) : null;
  const offered = m ? Buffer.from(m[1]!, 'hex') : Buffer.alloc(32);
  let sigOk = false;
  for (const key of keys) {
    const expected = createHmac('sha256', key).update(body).digest();
    if (timingSafeEqual(offered, expected)) sigOk = true;
  }
  return m !== null && sigOk;
}
