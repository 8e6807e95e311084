import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Args, UsageError, onlyFlags, str } from './args.js';
import { exitCodeOf } from './run.js';
import { clean, clip, fields, table } from './table.js';
import type { JobView } from '../jobs/view.js';

export const FN_HELP = `corral fn deploy NAME [--image I] [--timeout S] [--retries N] [--cpu C | --cpuset 0-1] [--memory 256M]
                     [--env K=V]... [--max-concurrent N] [--content-type T] [--description D]
                     [--callback-url U] -- CMD...
corral fn invoke NAME [--wait N] [--timeout S] [--memory M] [--content-type T] < input
corral fn ls [--json]
corral fn get NAME [--json]
corral fn rm NAME

deploy saves (or replaces) a function; one argument after "--" is a shell line run by /bin/sh -c
inside the container, several are an argv run directly. --env may be given many times.
invoke sends standard input as the function's stdin, writes its stdout and stderr to ours and
exits with its exit code (124 if it timed out, 125 if corral could not run it). It waits for the
end; --wait N gives up after N seconds (exit 125), --wait 0 prints the job id and returns at once.
Common flags: --url http://127.0.0.1:8080, --token T (or CORRAL_TOKEN, or $CORRAL_DATA/default.token).`;

const COMMON = ['url', 'token', 'data'];
/** The longest one request holds for the job (the gateway's ?wait maximum). */
const MAX_HOLD_SECONDS = 60;

export interface Api {
  url: string;
  headers: Record<string, string>;
}

interface FunctionView {
  name: string;
  version: number;
  image: string;
  command: string | string[];
  timeout: number | null;
  memory: number | null;
  maxConcurrent: number | null;
  description: string | null;
  updatedAt: string;
  [k: string]: unknown;
}

/** What the CLI reads of a job (the gateway's JobView). */
type Job = Pick<JobView, 'id' | 'state' | 'exitCode' | 'signal' | 'reason'>;

export function api(args: Args, env: NodeJS.ProcessEnv): Api {
  const url = (str(args.flags, 'url') ?? env.CORRAL_URL ?? `http://127.0.0.1:${env.CORRAL_PORT ?? 8080}`).replace(/\/+$/, '');
  const tokenFile = join(str(args.flags, 'data') ?? env.CORRAL_DATA ?? './.corral', 'default.token');
  const token = str(args.flags, 'token') ?? env.CORRAL_TOKEN ?? (existsSync(tokenFile) ? readFileSync(tokenFile, 'utf8').trim() : undefined);
  if (!token) throw new UsageError(`no token: pass --token, set CORRAL_TOKEN, or run corral up (writes ${tokenFile})`);
  return { url, headers: { authorization: `Bearer ${token}` } };
}

/** Prints a problem+json answer; the exit code for "corral could not do it". */
export async function failed(res: Response): Promise<number> {
  const p = (await res.json().catch(() => ({}))) as { detail?: string; errors?: Array<{ field: string; message: string }> };
  process.stderr.write(`corral: ${res.status} ${p.detail ?? res.statusText}\n`);
  for (const e of p.errors ?? []) process.stderr.write(`  ${e.field}: ${e.message}\n`);
  return 125;
}

function number(args: Args, key: string): number | undefined {
  const v = str(args.flags, key);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${key} must be a number`);
  return n;
}

function nameOf(args: Args, verb: string): string {
  const name = args.positional[1];
  if (!name) throw new UsageError(`corral fn ${verb} NAME: the function's name is missing`);
  if (args.positional.length > 2) throw new UsageError(`corral fn ${verb} takes one name, got ${args.positional.slice(1).join(' ')}`);
  return name;
}

const fnPath = (name: string) => `/v1/functions/${encodeURIComponent(name)}`;

/** `--env K=V`, each one pair (a value may hold "," or "="). */
function envPairs(args: Args): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of args.repeated.env ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--env wants K=V, got "${pair}"`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}

async function deploy(args: Args, a: Api): Promise<number> {
  onlyFlags(args.flags, [...COMMON, 'image', 'timeout', 'retries', 'cpu', 'cpuset', 'memory', 'env', 'max-concurrent', 'content-type', 'description', 'callback-url']);
  const name = nameOf(args, 'deploy');
  if (args.rest.length === 0) throw new UsageError('nothing to run: corral fn deploy NAME [flags] -- CMD...');
  const flag = (k: string) => str(args.flags, k);
  const body = {
    command: args.rest.length === 1 ? args.rest[0] : args.rest,
    ...(flag('image') !== undefined && { image: flag('image') }),
    ...(number(args, 'timeout') !== undefined && { timeout: number(args, 'timeout') }),
    ...(number(args, 'retries') !== undefined && { retries: number(args, 'retries') }),
    ...(number(args, 'cpu') !== undefined && { cpu: number(args, 'cpu') }),
    ...(flag('cpuset') !== undefined && { cpuset: flag('cpuset') }),
    ...(flag('memory') !== undefined && { memory: flag('memory') }),
    ...(args.repeated.env && { env: envPairs(args) }),
    ...(number(args, 'max-concurrent') !== undefined && { maxConcurrent: number(args, 'max-concurrent') }),
    ...(flag('content-type') !== undefined && { contentType: flag('content-type') }),
    ...(flag('description') !== undefined && { description: flag('description') }),
    ...(flag('callback-url') !== undefined && { callbackUrl: flag('callback-url') }),
  };
  const res = await fetch(a.url + fnPath(name), { method: 'PUT', headers: { ...a.headers, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) return failed(res);
  const fn = (await res.json()) as FunctionView;
  process.stdout.write(`${res.status === 201 ? 'created' : 'saved'} ${fn.name} version ${fn.version}\n`);
  return 0;
}

async function readStdin(): Promise<Buffer> {
  if (process.stdin.isTTY) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function output(a: Api, id: string, stream: 'stdout' | 'stderr'): Promise<Buffer> {
  const res = await fetch(`${a.url}/v1/jobs/${id}/output?stream=${stream}`, { headers: a.headers });
  return res.ok ? Buffer.from(await res.arrayBuffer()) : Buffer.alloc(0);
}

async function invoke(args: Args, a: Api): Promise<number> {
  onlyFlags(args.flags, [...COMMON, 'wait', 'timeout', 'memory', 'content-type']);
  const name = nameOf(args, 'invoke');
  const limit = number(args, 'wait');
  if (limit !== undefined && limit < 0) throw new UsageError('--wait must be 0 or more seconds');
  const deadline = limit === undefined ? Infinity : Date.now() + limit * 1000;
  const holdFor = () => Math.max(0, Math.min(MAX_HOLD_SECONDS, Math.ceil((deadline - Date.now()) / 1000)));
  const query = new URLSearchParams({ wait: String(holdFor()) });
  for (const k of ['timeout', 'memory']) if (str(args.flags, k) !== undefined) query.set(k, str(args.flags, k)!);
  const res = await fetch(`${a.url}${fnPath(name)}/invoke?${query}`, {
    method: 'POST',
    headers: { ...a.headers, 'content-type': str(args.flags, 'content-type') ?? 'application/octet-stream' },
    body: new Uint8Array(await readStdin()),
  });
  if (res.status === 200) {
    // Succeeded: the body is its stdout, byte for byte.
    process.stdout.write(Buffer.from(await res.arrayBuffer()));
    process.stderr.write(await output(a, res.headers.get('corral-job-id')!, 'stderr'));
    return 0;
  }
  if (res.status !== 202 && res.status !== 502) return failed(res);
  // 202: the job; 502: a problem carrying the job's id, state, exit code and signal.
  let job = (await res.json()) as Job & { jobId?: string };
  const id = job.jobId ?? job.id;
  if (limit === 0) {
    process.stdout.write(`${id}\n`);
    return 0;
  }
  // Still running (202): hold on it until it ends or --wait runs out.
  while (res.status === 202 && !['succeeded', 'failed', 'timed_out', 'cancelled'].includes(job.state)) {
    const hold = holdFor();
    if (hold === 0) {
      process.stderr.write(`corral: job ${id} is still ${job.state}; see GET /v1/jobs/${id}\n`);
      return 125;
    }
    const next = await fetch(`${a.url}/v1/jobs/${id}?wait=${hold}`, { headers: a.headers });
    if (!next.ok) return failed(next);
    job = (await next.json()) as Job;
  }
  process.stdout.write(await output(a, id, 'stdout'));
  process.stderr.write(await output(a, id, 'stderr'));
  if (job.state !== 'succeeded') process.stderr.write(`corral: job ${id} ${job.state}${job.reason ? ` (${job.reason})` : ''}\n`);
  return exitCodeOf(job);
}

async function list(args: Args, a: Api): Promise<number> {
  onlyFlags(args.flags, [...COMMON, 'json']);
  const all: FunctionView[] = [];
  let cursor: string | null = null;
  do {
    const res = await fetch(`${a.url}/v1/functions?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, { headers: a.headers });
    if (!res.ok) return failed(res);
    const page = (await res.json()) as { functions: FunctionView[]; nextCursor: string | null };
    all.push(...page.functions);
    cursor = page.nextCursor;
  } while (cursor);
  if (args.flags.json === true) {
    process.stdout.write(JSON.stringify(all, null, 2) + '\n');
    return 0;
  }
  const rows = [['NAME', 'VERSION', 'IMAGE', 'COMMAND'], ...all.map((f) => [f.name, String(f.version), f.image, clip(clean(typeof f.command === 'string' ? f.command : JSON.stringify(f.command)), 60)])];
  process.stdout.write(table(rows));
  return 0;
}

async function show(args: Args, a: Api): Promise<number> {
  onlyFlags(args.flags, [...COMMON, 'json']);
  const res = await fetch(a.url + fnPath(nameOf(args, 'get')), { headers: a.headers });
  if (!res.ok) return failed(res);
  const fn = (await res.json()) as FunctionView;
  if (args.flags.json === true) {
    process.stdout.write(JSON.stringify(fn, null, 2) + '\n');
    return 0;
  }
  process.stdout.write(fields(fn));
  return 0;
}

async function remove(args: Args, a: Api): Promise<number> {
  onlyFlags(args.flags, COMMON);
  const name = nameOf(args, 'rm');
  const res = await fetch(a.url + fnPath(name), { method: 'DELETE', headers: a.headers });
  if (!res.ok) return failed(res);
  process.stdout.write(`removed ${name}\n`);
  return 0;
}

const VERBS: Record<string, (args: Args, a: Api) => Promise<number>> = { deploy, invoke, ls: list, get: show, rm: remove };

export async function fnCommand(args: Args, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const verb = args.positional[0];
  const run = verb === undefined ? undefined : VERBS[verb];
  if (!run) throw new UsageError(`corral fn ${verb ?? ''}: say deploy, invoke, ls, get or rm\n\n${FN_HELP}`);
  return run(args, api(args, env));
}
