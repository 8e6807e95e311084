import type { IncomingMessage } from 'node:http';
import type { MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { AppEnv } from './env.js';
import { ApiError, problem } from './errors.js';

class TooLarge extends Error {}

function readCapped(incoming: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    incoming.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        incoming.removeAllListeners('data');
        incoming.resume();
        reject(new TooLarge());
        return;
      }
      chunks.push(chunk);
    });
    incoming.once('end', () => resolve(Buffer.concat(chunks)));
    incoming.once('error', reject);
  });
}

/**
 * Caps request bodies at `limit` bytes (413 problem+json, also for chunked bodies). On Node's
 * HTTP server it reads the body straight from the socket and hands Hono the bytes, which skips
 * building a web ReadableStream per request — that stream was the largest cost of a submit in
 * the gateway's CPU profile (bench/submit.ts). Elsewhere (app.request in tests) Hono's own
 * body-limit does the same job.
 */
export function cappedBody(limit: number): MiddlewareHandler<AppEnv> {
  const tooLarge = () => new ApiError('payload_too_large', `the body is larger than ${limit} bytes`, [{ field: '(body)', message: 'too large' }], { connection: 'close' });
  const fallback = bodyLimit({ maxSize: limit, onError: (c) => problem(c, 'payload_too_large', `the body is larger than ${limit} bytes`, [{ field: '(body)', message: 'too large' }]) });
  return async function cappedBody(c, next) {
    const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
    const method = c.req.method;
    if (!incoming || method === 'GET' || method === 'HEAD') return fallback(c, next);
    const declared = Number(c.req.header('content-length') ?? NaN);
    if (declared > limit) throw tooLarge();
    let bytes: Buffer;
    try {
      bytes = await readCapped(incoming, limit);
    } catch (err) {
      if (err instanceof TooLarge) throw tooLarge();
      throw new ApiError('bad_request', 'the body could not be read', [{ field: '(body)', message: 'unreadable' }]);
    }
    // The bytes only: JSON routes get theirs decoded strictly and parsed once by checkedJsonBody,
    // and raw-body routes (an invoke's stdin, a webhook's signed bytes) read them as they came.
    const cache = (c.req as unknown as { bodyCache: Record<string, Promise<ArrayBuffer>> }).bodyCache;
    cache.arrayBuffer = Promise.resolve(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) as ArrayBuffer);
    await next();
  };
}
