import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, enc } from '../api.js';
import type { Fn, Image } from '../types.js';
import { Field, ProblemBanner, describedBy, fmtCommand } from '../ui.js';

const KEYS = ['name', 'command', 'image', 'timeout', 'retries', 'cpu', 'memory', 'env', 'maxConcurrent', 'contentType', 'description'] as const;
type Key = (typeof KEYS)[number];
type Form = Record<Key, string>;

const HELP: Record<Key, [string, string]> = {
  name: ['Name', 'Any Unicode letters, no "/". Invoke it at /v1/functions/NAME/invoke.'],
  command: ['Command', 'Run by /bin/sh -c in the container; the invoke body arrives on stdin.'],
  image: ['Image', 'The root filesystem its containers are made from.'],
  timeout: ['Timeout, seconds', 'Empty takes your quota’s maximum.'],
  retries: ['Retries', '0 to 10.'],
  cpu: ['CPU cores', 'e.g. 0.5; empty for your quota’s limit.'],
  memory: ['Memory', 'e.g. 256M; empty for your quota’s limit.'],
  env: ['Environment', 'One NAME=value a line; names starting CORRAL_ are corral’s.'],
  maxConcurrent: ['Reserved concurrency', 'At most this many of its jobs run at once, set aside from your slots. Empty: none.'],
  contentType: ['Content type', 'Of a synchronous invoke’s answer; default text/plain; charset=utf-8.'],
  description: ['Description', 'For people reading the list.'],
};

function fromFn(f: Fn | null): Form {
  const s = (v: unknown) => (v === null || v === undefined ? '' : String(v));
  if (!f) return { name: '', command: '', image: 'busybox', timeout: '', retries: '', cpu: '', memory: '', env: '', maxConcurrent: '', contentType: '', description: '' };
  return {
    name: f.name, command: fmtCommand(f.command), image: f.image, timeout: s(f.timeout), retries: s(f.retries), cpu: s(f.cpu), memory: s(f.memory),
    env: Object.entries(f.env ?? {}).map(([k, v]) => `${k}=${v}`).join('\n'), maxConcurrent: s(f.maxConcurrent), contentType: s(f.contentType), description: s(f.description),
  };
}

function toBody(f: Form): Record<string, unknown> {
  const num = (v: string) => (Number.isFinite(Number(v)) ? Number(v) : v);
  const b: Record<string, unknown> = { command: f.command.trim().startsWith('[') ? safeJson(f.command) : f.command, image: f.image };
  if (f.timeout.trim()) b.timeout = num(f.timeout);
  if (f.retries.trim()) b.retries = num(f.retries);
  if (f.cpu.trim()) b.cpu = num(f.cpu);
  if (f.memory.trim()) b.memory = /^\d+$/.test(f.memory.trim()) ? Number(f.memory) : f.memory.trim();
  if (f.maxConcurrent.trim()) b.maxConcurrent = num(f.maxConcurrent);
  if (f.contentType.trim()) b.contentType = f.contentType.trim();
  if (f.description) b.description = f.description;
  b.env = Object.fromEntries(f.env.split('\n').filter((l) => l.trim()).map((l) => [l.split('=')[0]!.trim(), l.slice(l.indexOf('=') + 1)]));
  return b;
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
}

/** Creates (no `fn`) or replaces a function with PUT /v1/functions/:name. */
export function FunctionForm({ fn, onSaved }: { fn: Fn | null; onSaved: (f: Fn) => void }) {
  const [form, setForm] = useState(fromFn(fn));
  const [images, setImages] = useState<Image[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState('');
  useEffect(() => setForm(fromFn(fn)), [fn?.version]);
  useEffect(() => {
    api<{ images: Image[] }>('/v1/images').then((r) => setImages(r.images), () => {});
  }, []);
  const err = (k: string) => (error instanceof ApiError ? error.field(k) : undefined);
  const save = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setSaved('');
    if (!form.name.trim()) return setError(new ApiError({ status: 400, detail: 'A function needs a name', errors: [{ field: 'name', message: 'give the function a name' }] }));
    try {
      const f = await api<Fn>(`/v1/functions/${enc(form.name.trim())}`, { method: 'PUT', json: toBody(form) });
      setSaved(`Saved as version ${f.version}.`);
      onSaved(f);
    } catch (x) {
      setError(x);
    }
  };
  const input = (k: Key) => {
    const id = `fn-${k}`;
    const e = err(k);
    const [label, help] = HELP[k];
    const common = { id, name: k, value: form[k], 'aria-invalid': e ? 'true' : undefined, 'aria-describedby': describedBy(id, true, e), onInput: (ev: Event) => setForm({ ...form, [k]: (ev.target as HTMLInputElement).value }) };
    const control =
      k === 'image'
        ? html`<select ...${common} onChange=${common.onInput}>${(images.some((i) => i.name === form.image) ? images : [{ name: form.image }, ...images]).map((i) => html`<option value=${i.name}>${i.name}</option>`)}</select>`
        : k === 'command' || k === 'env' || k === 'description'
          ? html`<textarea ...${common} rows="2" spellcheck="false"></textarea>`
          : html`<input ...${common} type="text" autocomplete="off" readonly=${k === 'name' && fn !== null} />`;
    return html`<${Field} id=${id} label=${label} help=${help} error=${e}>${control}<//>`;
  };
  const fieldErrors = error instanceof ApiError && error.problem.errors?.some((x) => x.field !== '(body)');
  return html`<form class="fn-form" onSubmit=${save} novalidate aria-label=${fn ? 'Edit function' : 'New function'}>
    ${fieldErrors ? html`<div class="banner error" role="alert">${(error as ApiError).problem.detail ?? 'Some fields need a change'}</div>` : html`<${ProblemBanner} error=${error} />`}
    ${input('name')}${input('command')}${input('image')}
    <div class="grid">${(['timeout', 'retries', 'cpu', 'memory', 'maxConcurrent', 'contentType'] as const).map(input)}</div>
    ${input('env')}${input('description')}
    <button type="submit">${fn ? 'Save changes' : 'Create function'}</button> <span role="status">${saved}</span>
  </form>`;
}
