import { readFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import type { WireFrame } from './proxy.js';
import { SPECS, type Accepted } from './workload.js';

export interface JobRow {
  id: string;
  state: string;
  exitCode: number | null;
  reason: string | null;
  retries: number;
  attemptCount: number;
}

export interface AttemptRow {
  jobId: string;
  n: number;
  agent: string;
  fence: number;
  claimedAt: number;
  endedAt: number | null;
  exitCode: number | null;
  reason: string | null;
}

/** What the database holds of the run, read once the gateway has stopped. */
export interface DbView {
  jobs: Map<string, JobRow>;
  attempts: Map<string, AttemptRow[]>;
  /** jobId → attempt n → stdout as stored. */
  stdout: Map<string, Map<number, string>>;
}

/** Reads the gateway's SQLite file read-only. */
export function readDb(file: string): DbView {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const jobs = new Map<string, JobRow>();
    for (const r of db
      .prepare('SELECT id, state, exit_code AS exitCode, reason, retries, attempt_count AS attemptCount FROM jobs')
      .all() as JobRow[])
      jobs.set(r.id, r);
    const attempts = new Map<string, AttemptRow[]>();
    for (const r of db
      .prepare(
        'SELECT job_id AS jobId, n, agent, fence, claimed_at AS claimedAt, ended_at AS endedAt, exit_code AS exitCode, reason FROM attempts ORDER BY job_id, n',
      )
      .all() as AttemptRow[]) {
      const list = attempts.get(r.jobId) ?? [];
      list.push(r);
      attempts.set(r.jobId, list);
    }
    const stdout = new Map<string, Map<number, string>>();
    for (const r of db.prepare(`SELECT job_id AS jobId, attempt, data FROM output WHERE stream = 'stdout' ORDER BY id`).all() as Array<{ jobId: string; attempt: number; data: Buffer }>) {
      const byN = stdout.get(r.jobId) ?? new Map<number, string>();
      byN.set(r.attempt, (byN.get(r.attempt) ?? '') + r.data.toString());
      stdout.set(r.jobId, byN);
    }
    return { jobs, attempts, stdout };
  } finally {
    db.close();
  }
}

/** `jobId/fence` of every late result the gateway logged as rejected (pino JSON lines). */
export function rejectedLate(gatewayLog: string): Set<string> {
  const out = new Set<string>();
  for (const line of readFileSync(gatewayLog, 'utf8').split('\n')) {
    if (!line.includes('superseded')) continue;
    try {
      const e = JSON.parse(line) as { msg?: string; jobId?: string; fence?: number };
      if (e.msg === 'late result for a superseded attempt rejected') out.add(`${e.jobId}/${e.fence}`);
    } catch {
      /* not a log line */
    }
  }
  return out;
}

export interface Finding {
  count: 'lost' | 'stuck' | 'duplicated' | 'wrong' | 'fenced' | 'note';
  jobId: string;
  kind: string;
  detail: string;
}

export interface Counts {
  lost: number;
  stuck: number;
  duplicated: number;
  wrong: number;
  leaked: number;
  fenced: number;
}

/** An attempt that ran its command to an end the job is charged for. */
const RAN = new Set(['exit', 'timeout', 'oom']);

/**
 * Jepsen-style verdicts over every job a client got a 2xx for:
 * - lost: not in the database;
 * - stuck: in it, not final;
 * - wrong: a final state, exit code or stdout its script rules out;
 * - duplicated: more charged attempts than its retries allow, two successes, one attempt's
 *   output stored twice, or a completed run the gateway neither recorded nor rejected while
 *   the job ran again;
 * - fenced: a completed run whose agent was cut off past its lease, re-run elsewhere, and whose
 *   late result the gateway logged as rejected (allowed: it is what fencing is for).
 */
export function check(
  accepted: Accepted[],
  db: DbView,
  frames: WireFrame[],
  rejected: Set<string>,
  /** The gateway's own faults (kill -9, disk full), from their start to the harness undoing them: named in the findings they explain. */
  gatewayFaults: Array<{ kind: string; from: number; to: number }> = [],
): { counts: Omit<Counts, 'leaked'>; findings: Finding[] } {
  const findings: Finding[] = [];
  const ended = new Map<string, WireFrame[]>();
  for (const f of frames) {
    if (f.dir !== 'up' || f.type !== 'ended' || !f.jobId) continue;
    const list = ended.get(f.jobId) ?? [];
    list.push(f);
    ended.set(f.jobId, list);
  }
  const fencedAttempts = new Set<string>();
  for (const a of accepted) {
    const add = (count: Finding['count'], detail: string) => findings.push({ count, jobId: a.id, kind: a.kind, detail });
    const job = db.jobs.get(a.id);
    if (!job) {
      add('lost', `accepted at ${new Date(a.at).toISOString()} after ${a.tries} tries, not in the database`);
      continue;
    }
    const attempts = db.attempts.get(a.id) ?? [];
    const trail = attempts.map((t) => `#${t.n} ${t.agent} fence ${t.fence} ${t.reason ?? 'open'}${t.exitCode === null ? '' : ` ${t.exitCode}`}`).join('; ');
    if (job.state === 'queued' || job.state === 'running') {
      add('stuck', `${job.state} after the drain; attempts: ${trail || 'none'}`);
      continue;
    }
    const spec = SPECS[a.kind];
    const allowed = a.kind.startsWith('cancel') && !a.cancelled ? ['cancelled', 'succeeded'] : [spec.expect.state];
    const out = db.stdout.get(a.id);
    if (!allowed.includes(job.state)) add('wrong', `ended ${job.state} (${job.reason}, exit ${job.exitCode}), expected ${allowed.join(' or ')}; attempts: ${trail}`);
    else if (spec.expect.exitCode !== undefined && job.state === spec.expect.state && job.exitCode !== spec.expect.exitCode)
      add('wrong', `exit ${job.exitCode}, expected ${spec.expect.exitCode}; attempts: ${trail}`);
    else if (spec.expect.stdout !== undefined && job.state === 'succeeded') {
      const got = out?.get(job.attemptCount) ?? '';
      if (got !== spec.expect.stdout && got !== spec.expect.stdout.repeat(2)) add('wrong', `stdout of the final attempt ${JSON.stringify(got)}, expected ${JSON.stringify(spec.expect.stdout)}; attempts: ${trail}`);
    }
    for (const [n, text] of out ?? []) if (spec.expect.stdout && text.startsWith(spec.expect.stdout.repeat(2))) add('duplicated', `attempt ${n}'s output stored twice: ${JSON.stringify(text)}`);
    const charged = attempts.filter((t) => t.reason !== null && RAN.has(t.reason) && !(t.reason === 'exit' && t.exitCode === 0));
    if (charged.length > job.retries + 1) add('duplicated', `${charged.length} charged attempts with retries ${job.retries}; attempts: ${trail}`);
    if (spec.expect.exitAttempts !== undefined && job.state === spec.expect.state && charged.length < spec.expect.exitAttempts)
      add('wrong', `${charged.length} failed attempts, its retries ask for ${spec.expect.exitAttempts}; attempts: ${trail}`);
    const successes = attempts.filter((t) => t.reason === 'exit' && t.exitCode === 0);
    if (successes.length > 1) add('duplicated', `${successes.length} successful attempts; attempts: ${trail}`);
    if (new Set(attempts.map((t) => t.fence)).size !== attempts.length) add('duplicated', `two attempts share a fence; attempts: ${trail}`);
    // Runs the agents finished and delivered to the gateway, against what the database kept.
    for (const f of ended.get(a.id) ?? []) {
      if (!f.reason || !RAN.has(f.reason)) continue;
      const mine = attempts.find((t) => t.fence === f.fence);
      if (mine && mine.reason === f.reason && mine.exitCode === (f.exitCode ?? null)) continue;
      const key = `${a.id}/${f.fence}`;
      if (fencedAttempts.has(key)) continue;
      const again = attempts.some((t) => t.fence !== f.fence && t.reason !== null && RAN.has(t.reason));
      const what = `${f.agent} delivered fence ${f.fence} ${f.reason} ${f.exitCode ?? ''} at ${new Date(f.at).toISOString()}; database: ${mine ? `${mine.reason} ${mine.exitCode ?? ''}` : 'no such attempt'}; attempts: ${trail}`;
      if (!again) add('note', `a delivered result not recorded, the job did not run again: ${what}`);
      else if (rejected.has(key)) {
        fencedAttempts.add(key);
        add('fenced', what);
      } else {
        const during = gatewayFaults.find((g) => f.at >= g.from - 1000 && f.at <= g.to + 1000);
        add('duplicated', `ran again, its earlier delivered result neither recorded nor logged as rejected${during ? ` (delivered during the gateway's ${during.kind})` : ''}: ${what}`);
      }
    }
  }
  const n = (c: Finding['count']) => new Set(findings.filter((f) => f.count === c).map((f) => (c === 'fenced' ? f.detail : f.jobId))).size;
  return { counts: { lost: n('lost'), stuck: n('stuck'), duplicated: n('duplicated'), wrong: n('wrong'), fenced: fencedAttempts.size }, findings };
}

/** Jobs in the database no client holds a 2xx for (a submit retried with its key must not make a second job). */
export function unacknowledged(accepted: Accepted[], db: DbView): string[] {
  const ids = new Set(accepted.map((a) => a.id));
  return [...db.jobs.keys()].filter((id) => !ids.has(id));
}

/** The counts line, exactly as scripts read it. */
export function countsLine(c: Counts): string {
  return `faults: lost=${c.lost} stuck=${c.stuck} duplicated=${c.duplicated} wrong=${c.wrong} leaked=${c.leaked} fenced=${c.fenced}`;
}
