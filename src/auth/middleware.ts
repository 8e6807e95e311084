import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from '../http/env.js';
import { ApiError } from '../http/errors.js';
import type { Scope } from './principal.js';
import { InvalidToken, type TokenVerifier } from './verifier.js';

const BEARER = /^Bearer\s+([A-Za-z0-9_\-.]+)$/i;

/**
 * Verifies the bearer token and puts the principal on the context. A token naming a tenant that
 * does not exist is refused: tenants are created by an admin first.
 */
export function authenticate(verifier: TokenVerifier, tenantExists: (id: string) => boolean): MiddlewareHandler<AppEnv> {
  return async function authenticate(c, next) {
    const header = c.req.header('authorization');
    if (!header) throw unauthorized('missing bearer token');
    const m = BEARER.exec(header);
    if (!m) throw unauthorized('authorization must be "Bearer <token>"');
    let principal;
    try {
      principal = await verifier.verify(m[1]!);
    } catch (err) {
      if (err instanceof InvalidToken) throw unauthorized(err.message);
      throw err;
    }
    if (principal.tenant !== undefined && !tenantExists(principal.tenant)) throw unauthorized('token tenant does not exist');
    c.set('principal', principal);
    await next();
  };
}

function unauthorized(detail: string) {
  return new ApiError('unauthorized', detail, [{ field: 'authorization', message: detail }], {
    'www-authenticate': 'Bearer realm="corral"',
  });
}

/** Lets the request through when the token holds any of `scopes`; tenant routes also need a tenant. */
export function requireScope(scopes: Scope[], opts: { tenant?: boolean } = {}): MiddlewareHandler<AppEnv> {
  if (scopes.length === 0) throw new Error('requireScope needs at least one scope');
  return async function requireScope(c, next) {
    const p = c.get('principal');
    if (!scopes.some((s) => p.scopes.has(s))) {
      throw new ApiError('forbidden', `token lacks scope ${scopes.join(' or ')}`, [{ field: 'scope', message: `needs ${scopes.join(' or ')}` }]);
    }
    if (opts.tenant && p.tenant === undefined) {
      throw new ApiError('forbidden', 'this route needs a tenant token', [{ field: 'tenant', message: 'token has no tenant claim' }]);
    }
    await next();
  };
}
