/** The console's only way to the API: same origin, the pasted token as a Bearer credential. */

const KEY = 'corral.token';

export interface FieldError {
  field: string;
  message: string;
}

export interface Problem {
  type?: string;
  title?: string;
  status: number;
  detail?: string;
  errors?: FieldError[];
}

/** A non-2xx answer, with its problem+json body when it had one. */
export class ApiError extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail ?? problem.title ?? `HTTP ${problem.status}`);
  }
  /** The message for one field, as the API named it (e.g. "name", "quota.maxCpu"). */
  field(name: string): string | undefined {
    return this.problem.errors?.find((e) => e.field === name || e.field.startsWith(`${name}.`))?.message;
  }
}

export const token = {
  get: (): string | null => sessionStorage.getItem(KEY),
  set: (t: string) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

export interface Claims {
  sub?: string;
  tenant?: string;
  scopes: string[];
  exp?: number;
}

/** Reads a JWT's claims to decide which pages to show; the gateway is what checks them. */
export function claims(jwt: string): Claims | null {
  const part = jwt.split('.')[1];
  if (!part) return null;
  try {
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    const bytes = Uint8Array.from(json, (ch) => ch.charCodeAt(0));
    const c = JSON.parse(new TextDecoder().decode(bytes)) as { sub?: string; tenant?: string; scope?: string; exp?: number };
    return { ...(c.sub && { sub: c.sub }), ...(c.tenant && { tenant: c.tenant }), scopes: (c.scope ?? '').split(' ').filter(Boolean), ...(c.exp && { exp: c.exp }) };
  } catch {
    return null;
  }
}

export interface Call {
  method?: string;
  json?: unknown;
  body?: BodyInit;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** Sends one request; resolves with the raw response when it is 2xx, else throws ApiError. */
export async function send(path: string, o: Call = {}): Promise<Response> {
  const headers: Record<string, string> = { ...o.headers };
  const t = token.get();
  if (t) headers.authorization = `Bearer ${t}`;
  if (o.json !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, {
    method: o.method ?? 'GET',
    headers,
    ...(o.json !== undefined ? { body: JSON.stringify(o.json) } : o.body !== undefined ? { body: o.body } : {}),
    ...(o.signal && { signal: o.signal }),
  });
  if (res.ok) return res;
  let problem: Problem = { status: res.status, title: res.statusText };
  try {
    problem = { ...problem, ...((await res.json()) as Partial<Problem>) };
  } catch {
    // Not JSON: the status says enough.
  }
  if (res.status === 401) window.dispatchEvent(new CustomEvent('corral:unauthorized'));
  throw new ApiError(problem);
}

/** JSON in, JSON out. */
export async function api<T>(path: string, o: Call = {}): Promise<T> {
  const res = await send(path, o);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

/** Builds a query string from the defined, non-empty values. */
export function qs(params: Record<string, string | number | undefined | null>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
}

export const enc = encodeURIComponent;
