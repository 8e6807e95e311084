import { type Args, UsageError, onlyFlags, str } from './args.js';
import { api, failed } from './fn.js';
import { jobPath, oneJob, type JobView } from './jobs.js';
import { exitCodeOf } from './run.js';
import { followOutput } from './sse.js';

export const LOGS_HELP = `corral logs ID|NAME [-f | --follow] [--stream stdout|stderr] [--attempt N]

Writes a job's output: its stdout to ours, its stderr to ours, byte for byte (the latest attempt,
or --attempt N). --stream prints one of the two. -f follows the output live until the job ends and
then exits with the job's exit code, as corral run does (124 if it timed out, 128+N if a signal
ended it); without -f, corral logs exits 0 once the output is written.
Common flags: --url http://127.0.0.1:8080, --token T (or CORRAL_TOKEN, or $CORRAL_DATA/default.token).`;

export async function logsCommand(args: Args, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  onlyFlags(args.flags, ['url', 'token', 'data', 'follow', 'stream', 'attempt']);
  const job = oneJob(args, 'corral logs ID|NAME', 0);
  const stream = str(args.flags, 'stream');
  if (stream !== undefined && stream !== 'stdout' && stream !== 'stderr') throw new UsageError('--stream is stdout or stderr');
  const attempt = str(args.flags, 'attempt');
  if (attempt !== undefined && !/^[1-9]\d{0,2}$/.test(attempt)) throw new UsageError('--attempt must be an attempt number (1, 2, ...)');
  const a = api(args, env);
  const base = a.url + jobPath(job);

  if (args.flags.follow === true) {
    if (attempt !== undefined) throw new UsageError('--attempt and -f do not go together: -f follows every attempt');
    const res = await followOutput(`${base}/output?follow=1${stream ? `&stream=${stream}` : ''}`, a.headers);
    if (!res.ok) return failed(res);
    const end = await fetch(base, { headers: a.headers });
    if (!end.ok) return failed(end);
    const final = (await end.json()) as JobView;
    if (final.state !== 'succeeded') process.stderr.write(`corral: job ${final.id} ${final.state}${final.reason ? ` (${final.reason})` : ''}\n`);
    return exitCodeOf(final);
  }

  for (const s of stream ? [stream] : ['stdout', 'stderr']) {
    const res = await fetch(`${base}/output?stream=${s}${attempt ? `&attempt=${attempt}` : ''}`, { headers: a.headers });
    if (!res.ok) return failed(res);
    const bytes = Buffer.from(await res.arrayBuffer());
    await new Promise<void>((resolve) => (s === 'stdout' ? process.stdout : process.stderr).write(bytes, () => resolve()));
  }
  return 0;
}
