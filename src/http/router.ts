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

export const ProblemSchema = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    errors: z.array(z.object({ field: z.string(), message: z.string() })),
    requestId: z.string().optional(),
  })
  .openapi('Problem');

const problemContent = { 'application/problem+json': { schema: ProblemSchema } };

/** Standard error responses for the OpenAPI document. */
export function problems(...statuses: number[]) {
  const out: Record<number, { description: string; content: typeof problemContent }> = {};
  for (const s of statuses) out[s] = { description: `Problem (${s})`, content: problemContent };
  return out;
}

export const bearer = [{ bearer: [] as string[] }];
