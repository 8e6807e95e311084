import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { api, enc } from '../api.js';
import { Output } from '../output.js';
import { go, href } from '../router.js';
import { FINAL, type Job } from '../types.js';
import { ConfirmButton, Page, ProblemBanner, StateBadge, fmtBytes, fmtCommand, fmtDuration, fmtNum, fmtTime } from '../ui.js';

interface Delivery {
  id: string;
  url: string;
  state: string;
  lastStatus: number | null;
  lastError: string | null;
  createdAt: string;
  tries: Array<{ at: string; status?: number | null; error?: string | null }>;
}

function Request({ job }: { job: Job }) {
  const rows: Array<[string, string]> = [
    ['Command', fmtCommand(job.command)],
    ['Image', job.image],
    ['Timeout', `${job.timeout} s`],
    ['Retries', String(job.retries)],
    ['CPU', job.cpuset ? `cpuset ${job.cpuset}` : job.cpu != null ? `${job.cpu} cores` : '—'],
    ['Memory', typeof job.memory === 'number' ? fmtBytes(job.memory) : (job.memory ?? '—')],
    ['Environment', Object.entries(job.env ?? {}).map(([k, v]) => `${k}=${v}`).join('\n') || '—'],
    ['Fresh container', job.fresh ? 'yes' : 'no'],
  ];
  // The bytes are not shown (they can be megabytes); Re-run sends them again.
  if (job.stdinBytes > 0) rows.push(['Standard input', `${job.stdinBytes} bytes (kept)`]);
  if (job.callbackUrl) rows.push(['Callback URL', job.callbackUrl]);
  if (job.function) rows.push(['Function', `${job.function} (version ${job.functionVersion ?? '?'})`]);
  return html`<dl class="kv">${rows.map(([k, v]) => html`<dt>${k}</dt><dd><span class="pre">${v}</span></dd>`)}</dl>`;
}

function Attempts({ job }: { job: Job }) {
  if (job.attempts.length === 0) return html`<p class="muted">No attempt yet${job.queuePosition ? ` — number ${job.queuePosition} in your queue` : ''}.</p>`;
  return html`<div class="table-wrap"><table>
    <caption class="sr-only">Attempts</caption>
    <thead><tr><th scope="col">#</th><th scope="col">Agent</th><th scope="col">Container</th><th scope="col">Started</th><th scope="col">Took</th><th scope="col">Exit</th><th scope="col">Reason</th><th scope="col">CPU s</th><th scope="col">Peak memory</th></tr></thead>
    <tbody>${job.attempts.map(
      (a) => html`<tr><td>${a.n}</td><td>${a.agent ?? '—'}</td><td>${a.container ?? '—'}</td><td>${fmtTime(a.startedAt)}</td>
        <td>${fmtDuration(a.startedAt, a.endedAt)}</td><td>${a.exitCode ?? a.signal ?? '—'}</td><td>${a.reason ?? (a.endedAt ? '—' : 'running')}</td>
        <td>${fmtNum(a.cpuSeconds, 3)}</td><td>${fmtBytes(a.peakMemoryBytes)}</td></tr>`,
    )}</tbody></table></div>`;
}

function Deliveries({ id }: { id: string }) {
  const [list, setList] = useState<Delivery[] | null>(null);
  useEffect(() => {
    api<{ deliveries: Delivery[] }>(`/v1/jobs/${enc(id)}/deliveries`).then((r) => setList(r.deliveries), () => setList([]));
  }, [id]);
  if (!list || list.length === 0) return null;
  return html`<h2>Callback deliveries</h2><ul class="plain">${list.map(
    (d) => html`<li><strong>${d.state}</strong> to <code>${d.url}</code> — ${d.tries.length} tr${d.tries.length === 1 ? 'y' : 'ies'}${d.lastStatus ? `, last HTTP ${d.lastStatus}` : ''}${d.lastError ? `, ${d.lastError}` : ''}</li>`,
  )}</ul>`;
}

export function JobDetail({ id }: { id: string }) {
  const [job, setJob] = useState<Job | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let stop = false;
    const ac = new AbortController();
    const load = async (wait: number) => {
      try {
        const j = await api<Job>(`/v1/jobs/${enc(id)}${wait ? `?wait=${wait}` : ''}`, { signal: ac.signal });
        if (stop) return;
        setJob(j);
        setError(null);
        // Hold a request open until the job ends (≤ 10 s a time) rather than poll in a tight loop.
        if (!FINAL.has(j.state)) load(10);
      } catch (e) {
        if (!stop) setError(e);
      }
    };
    load(0);
    return () => {
      stop = true;
      ac.abort();
    };
  }, [id, tick]);
  const act = async (fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (e) {
      setError(e);
    }
  };
  const cancel = () => act(async () => setJob(await api<Job>(`/v1/jobs/${enc(id)}/cancel`, { method: 'POST' })));
  const remove = () => act(async () => {
    await api(`/v1/jobs/${enc(id)}`, { method: 'DELETE' });
    go('#/jobs');
  });
  // The gateway copies the request and its stdin (which views do not carry) into a new job.
  const rerun = () => act(async () => {
    const next = await api<Job>(`/v1/jobs/${enc(id)}/rerun`, { method: 'POST' });
    go(href('jobs', next.id));
  });
  if (!job) return html`<${Page} title="Job">${error ? html`<${ProblemBanner} error=${error} />` : html`<p aria-busy="true">Loading…</p>`}<//>`;
  const final = FINAL.has(job.state);
  return html`<${Page} title=${job.name ?? job.id}
    actions=${html`
      ${!final && html`<button type="button" class="danger" onClick=${cancel}>Cancel</button>`}
      <button type="button" onClick=${rerun}>Re-run</button>
      <a class="button secondary" href=${`${href('submit')}?from=${enc(job.id)}`}>Edit and re-run</a>
      <${ConfirmButton} label="Delete…" question="Delete this job and its output?" action="Delete" onConfirm=${remove} />`}>
    <${ProblemBanner} error=${error} />
    <p class="summary" aria-live="polite">
      <span class="state-line">State: <${StateBadge} state=${job.state} /></span>
      ${job.exitCode !== null && html` exit code <strong>${job.exitCode}</strong>`}
      ${job.signal && html` signal <strong>${job.signal}</strong>`}
      ${job.reason && html` reason <strong>${job.reason}</strong>`}
    </p>
    <p class="muted"><code>${job.id}</code> · created ${fmtTime(job.createdAt)} · ran ${fmtDuration(job.startedAt, job.endedAt)} · ${fmtBytes(job.outputBytes)} of output${job.outputTruncated ? ' (truncated at your quota)' : ''}</p>
    <${Output} jobId=${job.id} onEnd=${() => setTick((t) => t + 1)} />
    <h2>Attempts</h2>
    <${Attempts} job=${job} />
    <h2>Request</h2>
    <${Request} job=${job} />
    <${Deliveries} id=${job.id} />
  <//>`;
}
