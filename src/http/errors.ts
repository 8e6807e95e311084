import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { ZodError } from 'zod';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { Conflict, DomainError, LimitExceeded, NotFound, QuotaExceeded, Unprocessable, LeaseLost, StorageFull } from '../errors/domain.js';
import type { AppEnv } from './env.js';

/** The closed set of problems the API answers with. */
export const PROBLEMS = {
  bad_request: { status: 400, title: 'Bad request' },
  unauthorized: { status: 401, title: 'Unauthorized' },
  forbidden: { status: 403, title: 'Forbidden' },
  not_found: { status: 404, title: 'Not found' },
  method_not_allowed: { status: 405, title: 'Method not allowed' },
  request_timeout: { status: 408, title: 'Request timeout' },
  conflict: { status: 409, title: 'Conflict' },
  payload_too_large: { status: 413, title: 'Payload too large' },
  unsupported_media_type: { status: 415, title: 'Unsupported media type' },
  unprocessable: { status: 422, title: 'Unprocessable request' },
  rate_limited: { status: 429, title: 'Too many requests' },
  headers_too_large: { status: 431, title: 'Request header fields too large' },
  internal: { status: 500, title: 'Internal error' },
  /** The gateway worked; the function it ran did not succeed (a synchronous invoke). */
  function_failed: { status: 502, title: 'Function failed' },
  unavailable: { status: 503, title: 'Service unavailable' },
  /** The gateway's data disk is full: the request wrote nothing (RFC 4918 §11.5). */
  insufficient_storage: { status: 507, title: 'Insufficient storage' },
} as const;

/** Seconds a client is asked to wait after a full disk: long enough for an operator's cleanup to matter. */
const STORAGE_RETRY_AFTER_SECONDS = 5;

export type ProblemCode = keyof typeof PROBLEMS;

export interface FieldError {
  field: string;
  message: string;
}

/** An error that is already an HTTP answer. Thrown by middleware and routes. */
export class ApiError extends Error {
  constructor(
    readonly code: ProblemCode,
    message: string,
    readonly errors: FieldError[] = [],
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** A problem+json answer; `extensions` are extra members (RFC 9457 §3.2), such as a failed job's state. */
export function problem(c: Context, code: ProblemCode, detail: string, errors: FieldError[] = [], headers: Record<string, string> = {}, extensions: Record<string, unknown> = {}) {
  const { status, title } = PROBLEMS[code];
  // A more specific type may come in `extensions` (a quota's or a limit's own type); the rest cannot be overridden.
  const type = typeof extensions.type === 'string' ? extensions.type : `/problems/${code}`;
  const body = JSON.stringify({ ...extensions, type, title, status, detail, errors, requestId: c.get('requestId') });
  return c.body(body, status as ContentfulStatusCode, { 'content-type': 'application/problem+json', ...headers });
}

export function zodFieldErrors(err: ZodError, prefix = ''): FieldError[] {
  return err.issues.slice(0, 50).map((i) => {
    let path = i.path.map(String).join('.');
    // Unknown keys are reported on the object; name them instead.
    if (i.code === 'unrecognized_keys') path = [path, ...i.keys].filter(Boolean).join('.');
    return { field: prefix + (path || '(body)'), message: i.message };
  });
}

/**
 * A quota over its limit is `/problems/quota/<limit>` (429, Retry-After); a job asking more than
 * its tenant's per-job maximum is `/problems/limit/<limit>` (422): clients can tell which without
 * reading the detail.
 */
function fromDomain(err: DomainError): { code: ProblemCode; headers?: Record<string, string>; type?: string } {
  if (err instanceof NotFound) return { code: 'not_found' };
  if (err instanceof Conflict) return { code: 'conflict' };
  if (err instanceof LimitExceeded) return { code: 'unprocessable', type: `/problems/limit/${err.limit}` };
  if (err instanceof Unprocessable) return { code: 'unprocessable' };
  if (err instanceof QuotaExceeded) {
    return { code: 'rate_limited', type: `/problems/quota/${err.limit}`, headers: { 'retry-after': String(Math.max(1, Math.ceil(err.retryAfterSeconds))) } };
  }
  if (err instanceof LeaseLost) return { code: 'conflict' };
  if (err instanceof StorageFull) return { code: 'insufficient_storage', headers: { 'retry-after': String(STORAGE_RETRY_AFTER_SECONDS) } };
  return { code: 'bad_request' };
}

/** The one place errors become HTTP answers. Unknown errors are logged and answered 500. */
export function onError(err: Error, c: Context<AppEnv>) {
  if (err instanceof ApiError) return problem(c, err.code, err.message, err.errors, err.headers);
  if (err instanceof ZodError) return problem(c, 'bad_request', 'the request is not valid', zodFieldErrors(err));
  if (err instanceof DomainError) {
    const { code, headers, type } = fromDomain(err);
    const errors = err.field ? [{ field: err.field, message: err.message }] : [];
    return problem(c, code, err.message, errors, headers, type ? { type } : {});
  }
  if (err instanceof HTTPException) {
    const status = err.status;
    const code = (Object.keys(PROBLEMS) as ProblemCode[]).find((k) => PROBLEMS[k].status === status) ?? 'bad_request';
    const detail = /malformed json/i.test(err.message) ? 'the body is not valid JSON' : err.message || PROBLEMS[code].title;
    return problem(c, code, detail, code === 'bad_request' ? [{ field: '(body)', message: detail }] : []);
  }
  c.get('log')?.error({ err, requestId: c.get('requestId') }, 'unhandled error');
  return problem(c, 'internal', `an internal error occurred; quote request id ${c.get('requestId') ?? 'unknown'}`);
}
