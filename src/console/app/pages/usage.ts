import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.js';
import { Chart } from '../chart.js';
import type { Usage } from '../types.js';
import { Page, ProblemBanner, fmtBytes, fmtNum } from '../ui.js';

const unlimited = (v: number | null | undefined) => (v === null || v === undefined ? 'unlimited' : String(v));

const QUOTA_LABELS: Record<string, [string, (v: number | null) => string]> = {
  maxConcurrent: ['Running at once', unlimited],
  ratePerMinute: ['Submissions a minute', unlimited],
  firesPerMinute: ['Trigger fires a minute', unlimited],
  maxQueued: ['Queued at most', unlimited],
  maxTimeoutSeconds: ['Longest timeout, s', unlimited],
  maxMemoryBytes: ['Memory per job', (v) => fmtBytes(v)],
  maxCpu: ['CPU cores per job', unlimited],
  cpuSecondsPerDay: ['CPU-seconds a day', unlimited],
  maxOutputBytes: ['Output per job', (v) => fmtBytes(v)],
};

/** 'YYYY-MM-DDTHH' (UTC) → seconds since the epoch, uPlot's time axis. */
const hourStart = (h: string) => Date.parse(`${h}:00:00Z`) / 1000;

/**
 * The tenant's quota and what is left, jobs per hour (48 hours) and CPU-seconds per day (30 days)
 * as charts with tables, failures by reason.
 */
export function UsagePage() {
  const [u, setU] = useState<Usage | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    const load = () => api<Usage>('/v1/usage').then(setU, setError);
    load();
    const t = setInterval(load, 10_000);
    return () => clearInterval(t);
  }, []);
  if (!u) return html`<${Page} title="Usage"><${ProblemBanner} error=${error} />${!error && html`<p aria-busy="true">Loading…</p>`}<//>`;
  const days = [...u.days].reverse();
  const x = days.map((d) => Date.parse(`${d.day}T00:00:00Z`) / 1000);
  const hours = [...u.hours].reverse();
  const hourJobs = hours.reduce((a, h) => a + h.jobs, 0);
  const hourFailures = hours.reduce((a, h) => a + h.failures, 0);
  const failures = new Map<string, number>();
  for (const d of u.days) for (const [r, n] of Object.entries(d.failures)) failures.set(r, (failures.get(r) ?? 0) + n);
  const today = u.days[0];
  const left = (used: number, cap: number | null | undefined) => (cap === null || cap === undefined ? 'unlimited' : `${Math.max(0, cap - used)} of ${cap}`);
  return html`<${Page} title="Usage">
    <${ProblemBanner} error=${error} />
    <div class="cards">
      <div class="card"><h2>Now</h2><p><strong>${u.now.running}</strong> running (slots left: ${left(u.now.running, u.quota.maxConcurrent)})</p>
        <p><strong>${u.now.queued}</strong> queued (room left: ${left(u.now.queued, u.quota.maxQueued)})</p>
        <p>Oldest queued: ${u.now.oldestQueuedAgeSeconds} s</p></div>
      <div class="card"><h2>CPU budget today</h2><p><strong>${fmtNum(u.budget.usedToday)}</strong> CPU-seconds used</p>
        <p>Left: <strong>${u.budget.leftToday === null ? 'unlimited' : fmtNum(u.budget.leftToday)}</strong>${u.budget.cpuSecondsPerDay !== null && ` of ${u.budget.cpuSecondsPerDay}`}</p>
        <p>Jobs ended today: ${today?.jobs ?? 0}</p></div>
    </div>
    <div class="charts">
      <section aria-labelledby="jobs-per-hour"><h2 id="jobs-per-hour">Jobs per hour (48 hours, UTC)</h2>
        <${Chart} x=${hours.map((h) => hourStart(h.hour))} unit="jobs"
          series=${[{ label: 'Jobs ended', values: hours.map((h) => h.jobs), bars: true }, { label: 'of which failed', values: hours.map((h) => h.failures), bars: true, tone: 'danger' }]}
          summary=${`Jobs per hour, last 48 hours: ${hourJobs} ended, ${hourFailures} of them failed`} /></section>
      <section aria-labelledby="cpu-per-day"><h2 id="cpu-per-day">CPU-seconds per day (30 UTC days)</h2>
        <${Chart} x=${x} series=${[{ label: 'CPU-seconds per day', values: days.map((d) => d.cpuSeconds) }]} unit="CPU s" summary=${`CPU-seconds per day, last 30 days: ${fmtNum(days.reduce((a, d) => a + d.cpuSeconds, 0))} in all`} /></section>
    </div>
    <h2>Failures by reason (30 days)</h2>
    ${failures.size === 0
      ? html`<p class="muted">No failures.</p>`
      : html`<table class="narrow"><caption class="sr-only">Failures by reason</caption><thead><tr><th scope="col">Reason</th><th scope="col">Jobs</th></tr></thead>
          <tbody>${[...failures].sort((a, b) => b[1] - a[1]).map(([r, n]) => html`<tr><td>${r}</td><td>${n}</td></tr>`)}</tbody></table>`}
    <h2>Quota</h2>
    <table class="narrow"><caption class="sr-only">Quota</caption><tbody>
      ${Object.entries(QUOTA_LABELS).map(([k, [label, fmt]]) => html`<tr><th scope="row">${label}</th><td>${fmt(u.quota[k] ?? null)}</td></tr>`)}
    </tbody></table>
    <details><summary>Per hour, as a table</summary>
      <div class="table-wrap"><table class="narrow"><caption class="sr-only">Jobs per hour</caption>
        <thead><tr><th scope="col">Hour (UTC)</th><th scope="col">Jobs</th><th scope="col">Failed</th></tr></thead>
        <tbody>${u.hours.filter((h) => h.jobs).map((h) => html`<tr><td>${h.hour.replace('T', ' ')}:00</td><td>${h.jobs}</td><td>${h.failures}</td></tr>`)}</tbody>
      </table></div></details>
    <details><summary>Per day, as a table</summary>
      <div class="table-wrap"><table><caption class="sr-only">Usage per day</caption>
        <thead><tr><th scope="col">Day</th><th scope="col">Jobs</th><th scope="col">Attempts</th><th scope="col">CPU s</th><th scope="col">Wall s</th><th scope="col">GB-s</th></tr></thead>
        <tbody>${u.days.filter((d) => d.jobs || d.attempts).map((d) => html`<tr><td>${d.day}</td><td>${d.jobs}</td><td>${d.attempts}</td><td>${fmtNum(d.cpuSeconds)}</td><td>${fmtNum(d.wallSeconds)}</td><td>${fmtNum(d.gbSeconds)}</td></tr>`)}</tbody>
      </table></div></details>
  <//>`;
}
