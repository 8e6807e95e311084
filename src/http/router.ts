import { OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from './env.js';
import { ApiError, zodFieldErrors } from './errors.js';

/**
 * A router whose request validation errors become 400 problem+json naming each field, through
 * the same error map as everything else.
 */
export function router() {
  return new OpenAPIHono<AppEnv>({
    defaultHook: (result) => {
      if (!result.success) {
        const where = result.target === 'json' ? 'body' : result.target;
        throw new ApiError('bad_request', `the request ${where} is not valid`, zodFieldErrors(result.error));
      }
    },
  });
}

/** Every error answer's body: RFC 9457 problem details, plus the fields at fault. */
export const ProblemSchema = z
  .object({
    type: z.string().openapi({
      description: 'A URI reference naming the kind of problem; more specific kinds (`/problems/quota/<limit>`, `/problems/limit/<limit>`) say which limit was hit',
      example: '/problems/bad_request',
    }),
    title: z.string().openapi({ description: 'The same for every problem of this type', example: 'Bad request' }),
    status: z.number().int().openapi({ description: 'The HTTP status, repeated', example: 400 }),
    detail: z.string().openapi({ description: 'What went wrong with this request', example: 'the request body is not valid' }),
    errors: z
      .array(
        z.object({
          field: z.string().openapi({ description: 'Dotted path of the field at fault (`memory`, `env.PATH`), or `(body)`, a header or a query name', example: 'memory' }),
          message: z.string().openapi({ example: 'memory must be at least 4M' }),
        }),
      )
      .openapi({ description: 'One entry per field at fault; empty when the problem is not about a field' }),
    requestId: z.string().optional().openapi({ description: 'Quote it when reporting a 500' }),
  })
  .openapi('Problem', { description: 'application/problem+json (RFC 9457). Some problems carry more members, such as a failed function\'s `state` and `stderr`.' });

const problemContent = { 'application/problem+json': { schema: ProblemSchema } };

const PROBLEM_DESCRIPTIONS: Record<number, string> = {
  400: 'The request is not valid; `errors` names each field at fault',
  401: 'No valid credential',
  403: 'The credential lacks the scope, or names another tenant',
  404: 'No such resource (for this tenant)',
  405: 'Method not allowed',
  409: 'Conflicts with the current state (an idempotency key reused with another request, an existing id)',
  413: 'The body is larger than the limit',
  415: 'The body must be application/json',
  422: 'Well-formed but refused: over a per-job limit, or not possible as asked',
  429: 'Over a quota; Retry-After says when to try again',
  500: 'An internal error; quote the request id',
  502: 'The function ran and did not succeed',
  503: 'Not able to serve now',
  507: "The gateway's data disk is full: nothing was written; Retry-After says when to try again",
};

/** Error responses for the OpenAPI document, each a problem+json body. */
export function problems(...statuses: number[]) {
  const out: Record<number, { description: string; content: typeof problemContent }> = {};
  for (const s of statuses) out[s] = { description: PROBLEM_DESCRIPTIONS[s] ?? `Problem (${s})`, content: problemContent };
  return out;
}

/** Security for routes that need a JWT. */
export const bearer = [{ bearer: [] as string[] }];
/** Security for routes that need none (or carry their own, such as a signature the handler checks). */
export const open: Array<Record<string, string[]>> = [];
