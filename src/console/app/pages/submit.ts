import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, enc } from '../api.js';
import { go, href, type Route } from '../router.js';
import type { Image, Job } from '../types.js';
import { Field, Page, ProblemBanner, describedBy, fmtCommand } from '../ui.js';

type Form = Record<'command' | 'image' | 'name' | 'timeout' | 'retries' | 'cpu' | 'cpuset' | 'memory' | 'env' | 'stdin' | 'callbackUrl', string> & {
  fresh: boolean;
  network: boolean;
};

const EMPTY: Form = { command: '', image: 'busybox', name: '', timeout: '', retries: '', cpu: '', cpuset: '', memory: '', env: '', stdin: '', callbackUrl: '', fresh: false, network: false };

interface Spec {
  key: keyof Form;
  label: string;
  help: string;
  kind?: 'area' | 'number';
}

const FIELDS: Spec[] = [
  { key: 'command', label: 'Command', kind: 'area', help: 'Run by /bin/sh -c inside the container, never on the host. A JSON array such as ["echo","hi"] is an argv instead.' },
  { key: 'name', label: 'Name (optional)', help: 'Unique within your tenant; any Unicode letters, no "/". Find the job by it later.' },
  { key: 'timeout', label: 'Timeout, seconds', kind: 'number', help: 'The whole process tree is killed after this; empty takes your quota’s maximum.' },
  { key: 'retries', label: 'Retries', kind: 'number', help: '0 to 10 more attempts after a failure (exit ≠ 0, timeout, out of memory).' },
  { key: 'cpu', label: 'CPU cores', kind: 'number', help: 'e.g. 0.5; leave empty for your quota’s limit. Give this or a cpuset, not both.' },
  { key: 'cpuset', label: 'CPU set', help: 'Pin to cores, e.g. "0-1" or "0,2".' },
  { key: 'memory', label: 'Memory', help: 'e.g. 256M, 1G, or bytes. Past it the job is killed (reason oom).' },
  { key: 'env', label: 'Environment', kind: 'area', help: 'One NAME=value a line.' },
  { key: 'stdin', label: 'Standard input', kind: 'area', help: 'Sent to the command’s stdin.' },
  { key: 'callbackUrl', label: 'Callback URL', help: 'Gets a signed POST with the job when it ends (public addresses only).' },
];

/** The request as POST /v1/jobs takes it: only what was filled in; numbers as numbers. */
export function toRequest(f: Form): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  const cmd = f.command.trim();
  if (cmd.startsWith('[')) {
    try {
      body.command = JSON.parse(cmd);
    } catch {
      body.command = f.command;
    }
  } else body.command = f.command;
  const num = (v: string) => (v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : v);
  if (f.image) body.image = f.image;
  if (f.name) body.name = f.name;
  for (const k of ['timeout', 'retries', 'cpu'] as const) if (f[k].trim()) body[k] = num(f[k]);
  if (f.cpuset.trim()) body.cpuset = f.cpuset.trim();
  if (f.memory.trim()) body.memory = /^\d+$/.test(f.memory.trim()) ? Number(f.memory) : f.memory.trim();
  if (f.env.trim()) {
    body.env = Object.fromEntries(
      f.env
        .split('\n')
        .filter((l) => l.trim())
        .map((l) => {
          const i = l.indexOf('=');
          return i < 0 ? [l.trim(), ''] : [l.slice(0, i).trim(), l.slice(i + 1)];
        }),
    );
  }
  if (f.stdin) body.stdin = f.stdin;
  if (f.callbackUrl.trim()) body.callbackUrl = f.callbackUrl.trim();
  if (f.fresh) body.fresh = true;
  if (f.network) body.network = true;
  return body;
}

function fromJob(j: Job): Form {
  return {
    ...EMPTY,
    command: fmtCommand(j.command),
    image: j.image,
    timeout: String(j.timeout ?? ''),
    retries: String(j.retries ?? ''),
    cpu: j.cpu != null ? String(j.cpu) : '',
    cpuset: j.cpuset ?? '',
    memory: j.memory != null ? String(j.memory) : '',
    env: Object.entries(j.env ?? {}).map(([k, v]) => `${k}=${v}`).join('\n'),
    stdin: j.stdin ?? '',
    callbackUrl: j.callbackUrl ?? '',
    fresh: Boolean(j.fresh),
  };
}

export function Submit({ route }: { route: Route }) {
  const [form, setForm] = useState<Form>(EMPTY);
  const [images, setImages] = useState<Image[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [source, setSource] = useState<Job | null>(null);
  const from = route.query.get('from');
  useEffect(() => {
    api<{ images: Image[] }>('/v1/images').then((r) => setImages(r.images), setError);
  }, []);
  useEffect(() => {
    if (from)
      api<Job>(`/v1/jobs/${enc(from)}`).then((j) => {
        setSource(j);
        setForm(fromJob(j));
      }, setError);
  }, [from]);
  const set = (k: keyof Form) => (e: Event) => {
    const t = e.target as HTMLInputElement;
    setForm({ ...form, [k]: t.type === 'checkbox' ? t.checked : t.value });
  };
  const fieldError = (k: string) => (error instanceof ApiError ? error.field(k) : undefined);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const job = await api<Job>('/v1/jobs', { method: 'POST', json: toRequest(form) });
      go(href('jobs', job.id));
    } catch (err) {
      setError(err);
      // Focus the first field the API named, so the error is where the user is.
      requestAnimationFrame(() => (document.querySelector('.field.invalid textarea, .field.invalid input, .field.invalid select') as HTMLElement | null)?.focus());
    } finally {
      setBusy(false);
    }
  };
  const control = (s: Spec) => {
    const id = `job-${s.key}`;
    const err = fieldError(s.key);
    const common = { id, name: s.key, 'aria-invalid': err ? 'true' : undefined, 'aria-describedby': describedBy(id, true, err), onInput: set(s.key) };
    return html`<${Field} id=${id} label=${s.label} help=${s.help} error=${err}>
      ${s.kind === 'area'
        ? html`<textarea ...${common} rows=${s.key === 'command' ? 3 : 2} spellcheck="false" required=${s.key === 'command'} value=${form[s.key] as string}></textarea>`
        : html`<input ...${common} type="text" inputmode=${s.kind === 'number' ? 'decimal' : undefined} autocomplete="off" value=${form[s.key] as string} />`}
    <//>`;
  };
  const [first, ...rest] = FIELDS;
  const imageErr = fieldError('image');
  return html`<${Page} title=${from ? 'Re-run a job' : 'Submit a job'}>
    <${ProblemBanner} error=${error instanceof ApiError && error.problem.errors?.some((x) => x.field !== '(body)') ? null : error} />
    ${error instanceof ApiError && error.problem.errors?.some((x) => x.field !== '(body)') &&
    html`<div class="banner error" role="alert">${error.problem.detail ?? 'Some fields need a change'}: see the messages below.</div>`}
    ${source && source.stdinBytes > 0 && !source.stdin &&
    html`<p class="banner">The job had ${source.stdinBytes} bytes of standard input. Job views do not show it, so this form does not send it again:
      type it below, or use <a href=${href('jobs', source.id)}>Re-run</a> on the job's page, which keeps it.</p>`}
    <form class="job-form" onSubmit=${submit} novalidate>
      ${control(first!)}
      <${Field} id="job-image" label="Image" help="The root filesystem the container is made from." error=${imageErr}>
        <select id="job-image" name="image" value=${form.image} onChange=${set('image')} aria-describedby=${describedBy('job-image', true, imageErr)}>
          ${(images.some((i) => i.name === form.image) ? images : [{ name: form.image }, ...images]).map(
            (i) => html`<option value=${i.name}>${i.name}${i.available === false ? ' (no agent has it now)' : ''}</option>`,
          )}
        </select>
      <//>
      <div class="grid">${rest.slice(0, 6).map(control)}</div>
      ${rest.slice(6).map(control)}
      <div class="checks">
        <label><input type="checkbox" checked=${form.fresh} onChange=${set('fresh')} /> Fresh container <span class="help">(not a warm one)</span></label>
        <label><input type="checkbox" checked=${form.network} onChange=${set('network')} /> Network <span class="help">(policy may refuse)</span></label>
      </div>
      <button type="submit" disabled=${busy}>${busy ? 'Submitting…' : 'Submit job'}</button>
    </form>
  <//>`;
}
