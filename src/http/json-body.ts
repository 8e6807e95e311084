import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from './env.js';
import { ApiError } from './errors.js';

/** Deeper than any request of the API (a job is two levels); JSON.parse of 500k levels takes ~0.4 s. */
export const MAX_JSON_DEPTH = 32;

const utf8 = new TextDecoder('utf-8', { fatal: true });
/** JSON's whitespace: space, tab, line feed, carriage return. */
const isJsonSpace = (b: number) => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const bad = (field: string, message: string) => new ApiError('bad_request', `the body ${message}`, [{ field, message }]);

/**
 * Nesting depth past `MAX_JSON_DEPTH`, found in one pass before anything parses the text: a
 * body of brackets alone would otherwise hold the event loop while JSON.parse recurses.
 */
function tooDeep(text: string): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // the escaped character, whatever it is
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > MAX_JSON_DEPTH) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/**
 * The dotted path of the first string (key or value) that is not well-formed Unicode (a lone
 * surrogate, which only a `\uD800` escape can make) or of a key named `__proto__`, which
 * validation would turn into an object's prototype instead of a field and so drop unseen.
 */
function firstBadString(v: unknown, path: string[]): { field: string; message: string } | undefined {
  const at = (p: string[]) => p.join('.') || '(body)';
  if (typeof v === 'string') return LONE_SURROGATE.test(v) ? { field: at(path), message: 'has an unpaired surrogate (\\uD800–\\uDFFF escape); text must be well-formed Unicode' } : undefined;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const found = firstBadString(v[i], [...path, String(i)]);
      if (found) return found;
    }
  } else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (LONE_SURROGATE.test(k)) return { field: at([...path, k.replace(new RegExp(LONE_SURROGATE, 'g'), '\uFFFD')]), message: 'this name has an unpaired surrogate; text must be well-formed Unicode' };
      if (k === '__proto__') return { field: at([...path, k]), message: 'the name __proto__ is reserved' };
      const found = firstBadString(x, [...path, k]);
      if (found) return found;
    }
  }
  return undefined;
}

/**
 * A JSON request body as the routes will see it, or a 400 naming what is wrong: bytes that are
 * not UTF-8 (a decoder would silently turn them into U+FFFD, so the command run would not be
 * the one sent), nesting past `MAX_JSON_DEPTH`, text that is not JSON, a lone surrogate or a
 * `__proto__` key (named by its field).
 */
export function parseJsonBody(bytes: Uint8Array): unknown {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw bad('(body)', 'is not valid UTF-8');
  }
  if (tooDeep(text)) throw bad('(body)', `is nested deeper than ${MAX_JSON_DEPTH} levels`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw bad('(body)', 'is not valid JSON');
  }
  // Both only come from escapes or a literal key: most bodies are not walked at all.
  if (text.includes('\\u') || text.includes('__proto__')) {
    const found = firstBadString(value, []);
    if (found) throw new ApiError('bad_request', 'the request body is not valid', [found]);
  }
  return value;
}

/**
 * Checks and parses a JSON body once for the routes after it (their validators get the parsed
 * value from this request's `json()`). The raw-body route (a function's invoke, whose bytes
 * become stdin) is left alone; so is a request with no JSON content type, which `jsonOnly` has already judged.
 */
export function checkedJsonBody(jsonType: RegExp, isRaw: (method: string, path: string) => boolean): MiddlewareHandler<AppEnv> {
  return async function checkedJsonBody(c, next) {
    const method = c.req.method;
    const type = c.req.header('content-type');
    if ((method === 'POST' || method === 'PUT' || method === 'PATCH') && type && jsonType.test(type) && !isRaw(method, c.req.path)) {
      const bytes = new Uint8Array(await c.req.arrayBuffer());
      // A blank body means no fields, as no body does: a client that always sends the JSON type
      // can still re-run a job or create a trigger with the defaults (a required field is then
      // named as missing).
      const value = bytes.every(isJsonSpace) ? {} : parseJsonBody(bytes);
      // The validators read the body with c.req.json(), which would parse the text again.
      c.req.json = <T>() => Promise.resolve(value as T);
    }
    await next();
  };
}
