import { SignJWT } from 'jose';
import type { Scope } from './principal.js';

export interface MintOptions {
  secret: Uint8Array;
  issuer: string;
  audience: string;
  sub: string;
  tenant?: string;
  scopes: readonly Scope[];
  /** Lifetime in seconds. */
  ttlSeconds: number;
}

/** Signs an HS256 token the gateway accepts. */
export async function mintToken(o: MintOptions): Promise<string> {
  const claims: Record<string, unknown> = { scope: o.scopes.join(' ') };
  if (o.tenant !== undefined) claims.tenant = o.tenant;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(o.sub)
    .setIssuer(o.issuer)
    .setAudience(o.audience)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + o.ttlSeconds)
    .sign(o.secret);
}

/** "90s", "15m", "12h", "30d" or plain seconds → seconds. */
export function parseTtl(text: string): number | undefined {
  const m = /^(\d+)\s*([smhd]?)$/.exec(text.trim());
  if (!m) return undefined;
  const n = Number(m[1]) * ({ '': 1, s: 1, m: 60, h: 3600, d: 86400 } as Record<string, number>)[m[2] ?? '']!;
  return n > 0 && n <= 10 * 365 * 86400 ? n : undefined;
}
