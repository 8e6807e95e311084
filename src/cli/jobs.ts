import { type Args, UsageError, onlyFlags, str } from './args.js';
import { api, failed, type Api } from './fn.js';
import { clean, clip, fields, table } from './table.js';

export const JOBS_HELP = `corral jobs ls [--state S] [--name N | --name-prefix P] [--function F] [--limit N] [--cursor C] [--json]
corral jobs get ID|NAME [--json]

ls lists the tenant's jobs, newest first, one page at a time (--limit, default 50, at most 200);
when there are more it says which --cursor shows the next page. --state is one of queued, running,
succeeded, failed, timed_out, cancelled. --name is an exact name; --name-prefix lists the jobs
whose name starts with P (exact characters, case-sensitive: % and _ match only themselves).
get shows one job (by id or by name) and its attempts.
--json prints the gateway's answer as is: for ls, {"jobs": [...], "nextCursor": ...}.
Common flags: --url http://127.0.0.1:8080, --token T (or CORRAL_TOKEN, or $CORRAL_DATA/default.token).`;

const COMMON = ['url', 'token', 'data'];
const STATES = ['queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled'];

/** The job as the gateway answers it (a type only: nothing of the gateway loads with the CLI). */
export type { JobView } from '../jobs/view.js';
import type { JobView } from '../jobs/view.js';

export const jobPath = (idOrName: string) => `/v1/jobs/${encodeURIComponent(idOrName)}`;

export const commandText = (c: string | string[]) => (typeof c === 'string' ? c : JSON.stringify(c));

/** "2026-11-29T16:34:29.123Z" → "2026-11-29 16:34:29" (UTC, as the gateway stores it). */
const when = (iso: string | null) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$|Z$/, '') : '-');

function ending(j: { exitCode: number | null; signal?: string | null }): string {
  if (j.exitCode !== null) return String(j.exitCode);
  return j.signal ?? '-';
}

/** The one job id or name after the verb. */
export function oneJob(args: Args, usage: string, from = 1): string {
  const got = args.positional.slice(from);
  if (got.length !== 1) throw new UsageError(`${usage}: ${got.length ? `one job, got ${got.join(' ')}` : 'which job? give its id or name'}`);
  return got[0]!;
}

async function list(args: Args, a: Api): Promise<number> {
  onlyFlags(args.flags, [...COMMON, 'json', 'state', 'name', 'name-prefix', 'function', 'limit', 'cursor']);
  if (args.positional.length > 1) throw new UsageError(`corral jobs ls takes no arguments, got ${args.positional.slice(1).join(' ')}`);
  const query = new URLSearchParams();
  // Flag → the API's query parameter.
  const params = [['state', 'state'], ['name', 'name'], ['name-prefix', 'namePrefix'], ['function', 'function'], ['limit', 'limit'], ['cursor', 'cursor']] as const;
  for (const [flag, k] of params) {
    const v = str(args.flags, flag);
    if (v !== undefined) query.set(k, v);
  }
  const state = query.get('state');
  if (state !== null && !STATES.includes(state)) throw new UsageError(`--state is one of ${STATES.join(', ')}`);
  const limit = query.get('limit');
  if (limit !== null && !(Number.isInteger(Number(limit)) && Number(limit) >= 1 && Number(limit) <= 200)) throw new UsageError('--limit must be a whole number from 1 to 200');
  const res = await fetch(`${a.url}/v1/jobs${query.size ? `?${query}` : ''}`, { headers: a.headers });
  if (!res.ok) return failed(res);
  const page = (await res.json()) as { jobs: JobView[]; nextCursor: string | null };
  if (args.flags.json === true) {
    process.stdout.write(JSON.stringify(page, null, 2) + '\n');
    return 0;
  }
  const rows = [['ID', 'NAME', 'STATE', 'EXIT', 'CREATED (UTC)', 'FUNCTION', 'COMMAND']];
  for (const j of page.jobs) {
    rows.push([j.id, clip(clean(j.name ?? '-'), 32), j.state, ending(j), when(j.createdAt), clip(clean(j.function ?? '-'), 24), clip(clean(commandText(j.command)), 60)]);
  }
  process.stdout.write(page.jobs.length ? table(rows) : 'no jobs\n');
  if (page.nextCursor) process.stderr.write(`corral: more jobs: corral jobs ls --cursor ${page.nextCursor}${query.size ? ' (with the same filters)' : ''}\n`);
  return 0;
}

async function show(args: Args, a: Api): Promise<number> {
  onlyFlags(args.flags, [...COMMON, 'json']);
  const res = await fetch(a.url + jobPath(oneJob(args, 'corral jobs get ID|NAME')), { headers: a.headers });
  if (!res.ok) return failed(res);
  const job = (await res.json()) as JobView;
  if (args.flags.json === true) {
    process.stdout.write(JSON.stringify(job, null, 2) + '\n');
    return 0;
  }
  process.stdout.write(fields(job, new Set(['attempts'])));
  if (job.attempts.length === 0) return 0;
  const rows = [['ATTEMPT', 'AGENT', 'CONTAINER', 'STARTED (UTC)', 'ENDED (UTC)', 'EXIT', 'REASON', 'CPU S', 'PEAK MEM']];
  for (const t of job.attempts) {
    rows.push([
      String(t.n),
      t.agent ?? '-',
      t.container ?? '-',
      when(t.startedAt),
      when(t.endedAt),
      ending(t),
      t.reason ?? '-',
      t.cpuSeconds === null ? '-' : t.cpuSeconds.toFixed(2),
      t.peakMemoryBytes === null ? '-' : String(t.peakMemoryBytes),
    ]);
  }
  process.stdout.write('\n' + table(rows));
  return 0;
}

const VERBS: Record<string, (args: Args, a: Api) => Promise<number>> = { ls: list, get: show };

export async function jobsCommand(args: Args, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const verb = args.positional[0];
  const run = verb === undefined ? undefined : VERBS[verb];
  if (!run) throw new UsageError(`corral jobs ${verb ?? ''}: say ls or get\n\n${JOBS_HELP}`);
  return run(args, api(args, env));
}
