import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from './env.js';
import { ApiError } from './errors.js';

/** Requests that make new work: a submit, a job's re-run, a function's invoke, a trigger's fire. */
const NEW_WORK = /^\/(?:v1\/jobs(?:\/[^/]+\/rerun)?|v1\/functions\/[^/]+\/invoke|hooks\/[^/]+)\/?$/;

/**
 * While the gateway shuts down, answers new work with 503 and Retry-After (a client retries on
 * the next gateway, or this one after its restart); reads, cancels and deletes are still served,
 * and running attempts still report their results over the agent hub.
 */
export function refuseNewWorkWhile(draining: () => boolean, retryAfterSeconds = 5): MiddlewareHandler<AppEnv> {
  return async function drain(c, next) {
    if (c.req.method === 'POST' && draining() && NEW_WORK.test(c.req.path)) {
      throw new ApiError('unavailable', 'the gateway is shutting down and takes no new work; retry shortly', [], { 'retry-after': String(retryAfterSeconds) });
    }
    await next();
  };
}
