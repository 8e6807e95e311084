import { type Args, UsageError, onlyFlags, str } from './args.js';
import { api, failed } from './fn.js';
import type { Budget, DayUsage, UsageNow, UsageReport } from '../usage/service.js';

export const USAGE_HELP = `corral usage [--json] [--days N] [--tenant ID|all]

Shows what the tenant has queued and running now, today's CPU budget (used, including running
jobs, and what is left) and a table of the last days: jobs, attempts, CPU-seconds, wall-seconds,
GB-seconds, peak memory and failures by reason. Days are UTC. --days N shows N days (default 7,
at most 30); --json prints the gateway's answer as is. --tenant ID reads another tenant's usage
and needs an admin token; --tenant all lists every tenant.
Common flags: --url http://127.0.0.1:8080, --token T (or CORRAL_TOKEN, or $CORRAL_DATA/default.token).`;

const COMMON = ['url', 'token', 'data'];

/** The shapes GET /v1/usage and /v1/usage/all answer, as the gateway defines them. */
type Day = DayUsage;
type Now = UsageNow;
type Usage = Omit<UsageReport, 'quota'>;
interface AllUsage {
  day: string;
  tenants: Array<{ tenant: string; now: Now; today: Day; last30Days: Day; budget: Budget }>;
}

/** 1536 MiB → "1.5G": the memory notation jobs are written in. */
export function bytes(n: number): string {
  if (n === 0) return '0';
  const units = ['', 'K', 'M', 'G', 'T'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${Number(n.toFixed(n >= 10 ? 0 : 1))}${units[i]}`;
}

const num = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(n >= 100 ? 0 : 1));
const failures = (f: Record<string, number>) =>
  Object.entries(f)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${v}`)
    .join(', ') || '-';

/** Left-aligns the first column and right-aligns the numbers; the last column is free text. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows
    .map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd())
    .join('\n');
}

const budgetLine = (b: Budget) =>
  b.cpuSecondsPerDay === null
    ? `CPU today: ${num(b.usedToday)} s (no daily budget)`
    : `CPU today: ${num(b.usedToday)} of ${num(b.cpuSecondsPerDay)} s used (running jobs included), ${num(b.leftToday!)} s left`;

export function renderUsage(u: Usage, days: number): string {
  const head = [
    `tenant ${u.tenant}`,
    `now: ${u.now.queued} queued, ${u.now.running} running${u.now.queued > 0 ? `, oldest waiting ${u.now.oldestQueuedAgeSeconds} s` : ''}`,
    budgetLine(u.budget),
    '',
  ];
  const rows = [['day (UTC)', 'jobs', 'attempts', 'cpu s', 'wall s', 'GB s', 'peak mem', 'failures']];
  for (const d of u.days.slice(0, days)) {
    rows.push([d.day, String(d.jobs), String(d.attempts), num(d.cpuSeconds), num(d.wallSeconds), num(d.gbSeconds), bytes(d.peakMemoryBytes), failures(d.failures)]);
  }
  return `${head.join('\n')}\n${table(rows)}\n`;
}

export function renderAll(all: AllUsage): string {
  const rows = [['tenant', 'queued', 'running', 'jobs today', 'cpu s today', 'cpu s left', 'cpu s 30d', 'failures today']];
  for (const t of all.tenants) {
    rows.push([
      t.tenant,
      String(t.now.queued),
      String(t.now.running),
      String(t.today.jobs),
      num(t.budget.usedToday),
      t.budget.leftToday === null ? 'unlimited' : num(t.budget.leftToday),
      num(t.last30Days.cpuSeconds),
      failures(t.today.failures),
    ]);
  }
  return `${all.day} (UTC)\n${table(rows)}\n`;
}

export async function usageCommand(args: Args, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  onlyFlags(args.flags, [...COMMON, 'json', 'tenant', 'days']);
  if (args.positional.length > 0) throw new UsageError(`corral usage takes no arguments, got ${args.positional.join(' ')}`);
  const daysFlag = str(args.flags, 'days');
  const days = daysFlag === undefined ? 7 : Number(daysFlag);
  if (!Number.isInteger(days) || days < 1 || days > 30) throw new UsageError('--days must be a whole number from 1 to 30');
  const tenant = str(args.flags, 'tenant');
  const a = api(args, env);
  const path = tenant === undefined ? '/v1/usage' : tenant === 'all' ? '/v1/usage/all' : `/v1/tenants/${encodeURIComponent(tenant)}/usage`;
  const res = await fetch(a.url + path, { headers: a.headers });
  if (!res.ok) return failed(res);
  const body = (await res.json()) as Usage | AllUsage;
  if (args.flags.json === true) process.stdout.write(JSON.stringify(body, null, 2) + '\n');
  else process.stdout.write(tenant === 'all' ? renderAll(body as AllUsage) : renderUsage(body as Usage, days));
  return 0;
}
