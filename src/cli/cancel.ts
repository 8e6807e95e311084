import { type Args, onlyFlags } from './args.js';
import { api, failed } from './fn.js';
import { jobPath, oneJob, type JobView } from './jobs.js';

export const CANCEL_HELP = `corral cancel ID|NAME

Cancels a job: a queued one never runs, a running one is killed on its agent (TERM, then KILL).
Prints the job's state afterwards; a job that had already ended keeps its state.
Common flags: --url http://127.0.0.1:8080, --token T (or CORRAL_TOKEN, or $CORRAL_DATA/default.token).`;

export async function cancelCommand(args: Args, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  onlyFlags(args.flags, ['url', 'token', 'data']);
  const id = oneJob(args, 'corral cancel ID|NAME', 0);
  const a = api(args, env);
  const res = await fetch(`${a.url}${jobPath(id)}/cancel`, { method: 'POST', headers: a.headers });
  if (!res.ok) return failed(res);
  const job = (await res.json()) as JobView;
  process.stdout.write(`${job.id} ${job.state}\n`);
  return 0;
}
