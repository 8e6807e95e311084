import { type Args, onlyFlags } from './args.js';
import { api, failed } from './fn.js';
import { jobPath, oneJob } from './jobs.js';
import { clean } from './table.js';

export const RM_HELP = `corral rm ID|NAME

Deletes a job and its output (a running job is cancelled first). There is no undo.
Common flags: --url http://127.0.0.1:8080, --token T (or CORRAL_TOKEN, or $CORRAL_DATA/default.token).`;

export async function rmCommand(args: Args, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  onlyFlags(args.flags, ['url', 'token', 'data']);
  const id = oneJob(args, 'corral rm ID|NAME', 0);
  const a = api(args, env);
  const res = await fetch(a.url + jobPath(id), { method: 'DELETE', headers: a.headers });
  if (!res.ok) return failed(res);
  process.stdout.write(`removed ${clean(id)}\n`);
  return 0;
}
