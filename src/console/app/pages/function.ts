import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { api, enc, send, token } from '../api.js';
import { go, href } from '../router.js';
import type { Fn, Job } from '../types.js';
import { ConfirmButton, Field, Page, ProblemBanner, StateBadge, describedBy, fmtTime } from '../ui.js';
import { FunctionForm } from './function-form.js';
import { Triggers } from './triggers.js';

interface Answer {
  status: number;
  headers: Array<[string, string]>;
  body: string;
}

/** Invokes with ?wait so the answer (the function's stdout, or a 502 problem) shows here. */
function Invoke({ name }: { name: string }) {
  const [body, setBody] = useState('');
  const [type, setType] = useState('text/plain');
  const [answer, setAnswer] = useState<Answer | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const invoke = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    setAnswer(null);
    try {
      // send() throws on non-2xx; a 502 from a failed function is still an answer worth showing.
      const res = await fetch(`/v1/functions/${enc(name)}/invoke?wait=30`, { method: 'POST', body, headers: { 'content-type': type, authorization: `Bearer ${token.get() ?? ''}` } });
      const keep = ['content-type', 'corral-job-id', 'corral-state', 'corral-exit-code', 'location'];
      setAnswer({ status: res.status, headers: keep.filter((h) => res.headers.has(h)).map((h) => [h, res.headers.get(h)!]), body: await res.text() });
    } catch (x) {
      setError(x);
    } finally {
      setBusy(false);
    }
  };
  const jobId = answer?.headers.find(([h]) => h === 'corral-job-id')?.[1];
  return html`<form class="invoke" onSubmit=${invoke} aria-label="Invoke">
    <${Field} id="invoke-body" label="Request body" help="Becomes the job's stdin.">
      <textarea id="invoke-body" rows="3" spellcheck="false" value=${body} aria-describedby=${describedBy('invoke-body', true)} onInput=${(e: Event) => setBody((e.target as HTMLTextAreaElement).value)}></textarea>
    <//>
    <${Field} id="invoke-type" label="Content type" help="Passed on as CORRAL_CONTENT_TYPE.">
      <input id="invoke-type" type="text" value=${type} aria-describedby=${describedBy('invoke-type', true)} onInput=${(e: Event) => setType((e.target as HTMLInputElement).value)} />
    <//>
    <button type="submit" disabled=${busy}>${busy ? 'Waiting for the answer…' : 'Invoke and wait'}</button>
    <${ProblemBanner} error=${error} />
    ${answer &&
    html`<div class="answer" role="status">
      <p>HTTP <strong>${answer.status}</strong>${jobId && html` · job <a href=${href('jobs', jobId)}>${jobId}</a>`}</p>
      <dl class="kv">${answer.headers.map(([h, v]) => html`<dt>${h}</dt><dd>${v}</dd>`)}</dl>
      <pre class="output short" tabindex="0" aria-label="Answer body">${answer.body}</pre>
    </div>`}
  </form>`;
}

function RecentJobs({ name }: { name: string }) {
  const [jobs, setJobs] = useState<Job[]>([]);
  useEffect(() => {
    const load = () => api<{ jobs: Job[] }>(`/v1/jobs?function=${enc(name)}&limit=10`).then((r) => setJobs(r.jobs), () => {});
    load();
    const t = setInterval(load, 3000);
    return () => clearInterval(t);
  }, [name]);
  if (jobs.length === 0) return html`<p class="muted">No invocations yet.</p>`;
  return html`<ul class="plain">${jobs.map((j) => html`<li><a href=${href('jobs', j.id)}>${j.id}</a> <${StateBadge} state=${j.state} /> ${fmtTime(j.createdAt)}</li>`)}</ul>
    <p><a href=${`#/jobs?function=${enc(name)}`}>All jobs of this function</a> (open one for its callback deliveries)</p>`;
}

export function FunctionDetail({ name }: { name: string }) {
  const [fn, setFn] = useState<Fn | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    api<Fn>(`/v1/functions/${enc(name)}`).then(setFn, setError);
  }, [name]);
  const remove = async () => {
    try {
      await send(`/v1/functions/${enc(name)}`, { method: 'DELETE' });
      go('#/functions');
    } catch (e) {
      setError(e);
    }
  };
  return html`<${Page} title=${`Function ${name}`}
    actions=${html`<${ConfirmButton} label="Delete…" question="Delete this function and its triggers?" action="Delete" onConfirm=${remove} />`}>
    <${ProblemBanner} error=${error} />
    ${fn && html`
      <h2>Invoke</h2><${Invoke} name=${name} />
      <h2>Recent jobs</h2><${RecentJobs} name=${name} />
      <h2>Triggers</h2><${Triggers} name=${name} />
      <details><summary>Edit (version ${fn.version})</summary><${FunctionForm} fn=${fn} onSaved=${setFn} /></details>`}
  <//>`;
}
