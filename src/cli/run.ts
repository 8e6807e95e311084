import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Args, UsageError, onlyFlags, str } from './args.js';
import { followOutput } from './sse.js';
import type { JobView } from '../jobs/view.js';

export const RUN_HELP = `corral run [--image I] [--timeout S] [--retries N] [--cpu C | --cpuset 0-1] [--memory 256M]
           [--name N] [--fresh] [--env K=V,...] [--url http://127.0.0.1:8080] [--token T] -- CMD...

Submits a job, streams its output as it runs and exits with the job's exit code (124 if it timed
out, 128+N if a signal ended it, 125 if corral could not run it). One argument after "--" is a
shell line run by /bin/sh -c inside the container; several are an argv run directly.
The token comes from --token, CORRAL_TOKEN, or $CORRAL_DATA/default.token (written by corral up).`;

/** What the CLI reads of a job (the gateway's JobView). */
type Job = Pick<JobView, 'id' | 'state' | 'exitCode' | 'signal' | 'reason'>;

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGABRT: 6, SIGKILL: 9, SIGSEGV: 11, SIGPIPE: 13, SIGTERM: 15 };

/** The shell exit code for a finished job. */
export function exitCodeOf(job: Job): number {
  if (job.state === 'succeeded') return 0;
  if (job.state === 'timed_out') return 124;
  if (job.exitCode !== null) return job.exitCode;
  if (job.signal) return 128 + (SIGNALS[job.signal] ?? 0);
  return 125;
}

function num(flags: Args['flags'], key: string): number | undefined {
  const v = str(flags, key);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${key} must be a number`);
  return n;
}

export async function runCommand(args: Args, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  onlyFlags(args.flags, ['image', 'timeout', 'retries', 'cpu', 'cpuset', 'memory', 'name', 'fresh', 'env', 'url', 'token', 'data']);
  if (args.rest.length === 0) throw new UsageError('nothing to run: corral run [flags] -- CMD...');
  const url = (str(args.flags, 'url') ?? env.CORRAL_URL ?? `http://127.0.0.1:${env.CORRAL_PORT ?? 8080}`).replace(/\/+$/, '');
  const tokenFile = join(str(args.flags, 'data') ?? env.CORRAL_DATA ?? './.corral', 'default.token');
  const token = str(args.flags, 'token') ?? env.CORRAL_TOKEN ?? (existsSync(tokenFile) ? readFileSync(tokenFile, 'utf8').trim() : undefined);
  if (!token) throw new UsageError(`no token: pass --token, set CORRAL_TOKEN, or run corral up (writes ${tokenFile})`);
  const envPairs = str(args.flags, 'env');
  const body = {
    command: args.rest.length === 1 ? args.rest[0] : args.rest,
    ...(str(args.flags, 'image') && { image: str(args.flags, 'image') }),
    ...(num(args.flags, 'timeout') !== undefined && { timeout: num(args.flags, 'timeout') }),
    ...(num(args.flags, 'retries') !== undefined && { retries: num(args.flags, 'retries') }),
    ...(num(args.flags, 'cpu') !== undefined && { cpu: num(args.flags, 'cpu') }),
    ...(str(args.flags, 'cpuset') && { cpuset: str(args.flags, 'cpuset') }),
    ...(str(args.flags, 'memory') && { memory: str(args.flags, 'memory') }),
    ...(str(args.flags, 'name') && { name: str(args.flags, 'name') }),
    ...(args.flags.fresh === true && { fresh: true }),
    ...(envPairs && { env: Object.fromEntries(envPairs.split(',').map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)])) }),
  };
  const headers = { authorization: `Bearer ${token}` };
  const res = await fetch(`${url}/v1/jobs`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (!res.ok) {
    const p = (await res.json().catch(() => ({}))) as { detail?: string; errors?: Array<{ field: string; message: string }> };
    process.stderr.write(`corral: ${res.status} ${p.detail ?? res.statusText}\n`);
    for (const e of p.errors ?? []) process.stderr.write(`  ${e.field}: ${e.message}\n`);
    return 125;
  }
  const job = (await res.json()) as Job;
  await followOutput(`${url}/v1/jobs/${job.id}/output?follow=1`, headers);
  const final = (await (await fetch(`${url}/v1/jobs/${job.id}`, { headers })).json()) as Job;
  if (final.state !== 'succeeded') process.stderr.write(`corral: job ${final.id} ${final.state}${final.reason ? ` (${final.reason})` : ''}\n`);
  return exitCodeOf(final);
}
