import { readFileSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, decodeProtectedHeader, jwtVerify, type JWTPayload } from 'jose';
import type { Principal } from './principal.js';
import { parseScopes } from './principal.js';

export class InvalidToken extends Error {
  override name = 'InvalidToken';
}

export interface VerifierOptions {
  secret: Uint8Array;
  issuer: string;
  audience: string;
  /** A JWKS file path or http(s) URL for an external identity provider. */
  jwks?: string;
}

/** Asymmetric algorithms accepted from a JWKS; HS256 is accepted only with the gateway's own secret. */
const JWKS_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'EdDSA'];
const CACHE_LIMIT = 10_000;

/**
 * Verifies bearer tokens with jose: algorithms pinned per key source, `iss`, `aud` and `exp`
 * required. Verified tokens are cached until they expire, because the HMAC and
 * claim checks cost more than the rest of a submit (bench/submit.ts).
 */
export class TokenVerifier {
  private readonly jwks?: ReturnType<typeof createRemoteJWKSet> | ReturnType<typeof createLocalJWKSet>;
  private readonly cache = new Map<string, Principal>();

  constructor(private readonly o: VerifierOptions) {
    if (o.secret.byteLength < 32) throw new Error('the HS256 secret must be at least 32 bytes');
    if (o.jwks) {
      this.jwks = /^https?:\/\//.test(o.jwks)
        ? createRemoteJWKSet(new URL(o.jwks))
        : createLocalJWKSet(JSON.parse(readFileSync(o.jwks, 'utf8')));
    }
  }

  async verify(token: string, now = Date.now()): Promise<Principal> {
    if (token.length > 8192) throw new InvalidToken('token too long');
    // Keyed by the token itself: only a byte-identical token that already passed verification hits.
    const key = token;
    const hit = this.cache.get(key);
    if (hit) {
      if (hit.expiresAt * 1000 > now) return hit;
      this.cache.delete(key);
    }
    const principal = toPrincipal(await this.verifySignature(token));
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(key, principal);
    return principal;
  }

  private async verifySignature(token: string): Promise<JWTPayload> {
    let alg: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw new InvalidToken('token is not a JWT');
    }
    const opts = { issuer: this.o.issuer, audience: this.o.audience, requiredClaims: ['exp', 'sub'] };
    try {
      if (alg === 'HS256') return (await jwtVerify(token, this.o.secret, { ...opts, algorithms: ['HS256'] })).payload;
      if (this.jwks && alg && JWKS_ALGORITHMS.includes(alg)) {
        return (await jwtVerify(token, this.jwks, { ...opts, algorithms: JWKS_ALGORITHMS })).payload;
      }
    } catch (err) {
      throw new InvalidToken(describe(err));
    }
    throw new InvalidToken(`algorithm ${String(alg)} is not accepted`);
  }
}

function describe(err: unknown): string {
  const code = (err as { code?: string }).code;
  if (code === 'ERR_JWT_EXPIRED') return 'token expired';
  if (code === 'ERR_JWT_CLAIM_VALIDATION_FAILED') return `token claim invalid: ${(err as { claim?: string }).claim ?? 'unknown'}`;
  if (code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') return 'token signature invalid';
  return 'token invalid';
}

function toPrincipal(p: JWTPayload): Principal {
  if (typeof p.sub !== 'string' || p.sub.length === 0 || p.sub.length > 256) throw new InvalidToken('token sub invalid');
  const scopes = typeof p.scope === 'string' ? parseScopes(p.scope) : undefined;
  if (!scopes) throw new InvalidToken('token scope missing or unknown');
  const tenant = p.tenant;
  if (tenant !== undefined && (typeof tenant !== 'string' || tenant.length === 0)) throw new InvalidToken('token tenant invalid');
  return { sub: p.sub, ...(tenant !== undefined && { tenant: tenant as string }), scopes: new Set(scopes), expiresAt: p.exp! };
}
