import { type Args, UsageError, onlyFlags, str } from './args.js';
import { api, failed, type Api } from './fn.js';
import { table } from './table.js';

export const TRIGGER_HELP = `corral trigger add FN [--kind standard|github]
corral trigger ls FN [--json]
corral trigger rm FN ID
corral trigger rotate FN ID

add makes a webhook URL that runs function FN when a signed request arrives, and prints its URL
and secret. The secret is shown this once: give it to the sender now. --kind standard (the
default) verifies Standard Webhooks signatures (whsec_ secret); --kind github verifies GitHub's
X-Hub-Signature-256 (paste the URL and secret into the repository's webhook settings, content
type application/json). rotate prints a new secret; the previous one still works for 24 hours.
Common flags: --url http://127.0.0.1:8080, --token T (or CORRAL_TOKEN, or $CORRAL_DATA/default.token).`;

const COMMON = ['url', 'token', 'data'];

interface Trigger {
  id: string;
  url: string;
  kind: string;
  function: string;
  createdAt: string;
  rotatedAt: string | null;
  previousSecretExpiresAt: string | null;
  secret?: string;
}

const triggersPath = (fn: string) => `/v1/functions/${encodeURIComponent(fn)}/triggers`;

/** The positional arguments after the verb: exactly `names`. */
function positionals(args: Args, verb: string, names: string[]): string[] {
  const got = args.positional.slice(1);
  if (got.length !== names.length) throw new UsageError(`corral trigger ${verb} ${names.join(' ')}: got ${got.length ? got.join(' ') : 'nothing'}`);
  return got;
}

function printSecret(t: Trigger): void {
  process.stdout.write(`id      ${t.id}\nkind    ${t.kind}\nurl     ${t.url}\nsecret  ${t.secret}\n`);
  process.stderr.write('corral: the secret is not shown again; give it to the sender now\n');
}

async function add(args: Args, a: Api): Promise<number> {
  onlyFlags(args.flags, [...COMMON, 'kind']);
  const [fn] = positionals(args, 'add', ['FN']);
  const kind = str(args.flags, 'kind');
  if (kind !== undefined && kind !== 'standard' && kind !== 'github') throw new UsageError('--kind is standard or github');
  const res = await fetch(a.url + triggersPath(fn!), { method: 'POST', headers: { ...a.headers, 'content-type': 'application/json' }, body: JSON.stringify(kind ? { kind } : {}) });
  if (!res.ok) return failed(res);
  printSecret((await res.json()) as Trigger);
  return 0;
}

async function list(args: Args, a: Api): Promise<number> {
  onlyFlags(args.flags, [...COMMON, 'json']);
  const [fn] = positionals(args, 'ls', ['FN']);
  const res = await fetch(a.url + triggersPath(fn!), { headers: a.headers });
  if (!res.ok) return failed(res);
  const { triggers } = (await res.json()) as { triggers: Trigger[] };
  if (args.flags.json === true) {
    process.stdout.write(JSON.stringify(triggers, null, 2) + '\n');
    return 0;
  }
  const rows = [['ID', 'KIND', 'CREATED', 'URL'], ...triggers.map((t) => [t.id, t.kind, t.createdAt, t.url])];
  process.stdout.write(table(rows));
  return 0;
}

async function remove(args: Args, a: Api): Promise<number> {
  onlyFlags(args.flags, COMMON);
  const [fn, id] = positionals(args, 'rm', ['FN', 'ID']);
  const res = await fetch(`${a.url}${triggersPath(fn!)}/${encodeURIComponent(id!)}`, { method: 'DELETE', headers: a.headers });
  if (!res.ok) return failed(res);
  process.stdout.write(`removed ${id}\n`);
  return 0;
}

async function rotate(args: Args, a: Api): Promise<number> {
  onlyFlags(args.flags, COMMON);
  const [fn, id] = positionals(args, 'rotate', ['FN', 'ID']);
  const res = await fetch(`${a.url}${triggersPath(fn!)}/${encodeURIComponent(id!)}/rotate`, { method: 'POST', headers: a.headers });
  if (!res.ok) return failed(res);
  const t = (await res.json()) as Trigger;
  printSecret(t);
  process.stderr.write(`corral: the previous secret still verifies until ${t.previousSecretExpiresAt}\n`);
  return 0;
}

const VERBS: Record<string, (args: Args, a: Api) => Promise<number>> = { add, ls: list, rm: remove, rotate };

export async function triggerCommand(args: Args, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const verb = args.positional[0];
  const run = verb === undefined ? undefined : VERBS[verb];
  if (!run) throw new UsageError(`corral trigger ${verb ?? ''}: say add, ls, rm or rotate\n\n${TRIGGER_HELP}`);
  return run(args, api(args, env));
}
