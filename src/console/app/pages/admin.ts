import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, enc } from '../api.js';
import type { Image } from '../types.js';
import { Field, Page, ProblemBanner, describedBy, fmtBytes, fmtTime } from '../ui.js';

interface Pool {
  containers: number;
  blank: Record<string, number>;
  warm: Array<{ tenant: string; image: string; idle: number }>;
  busy: number;
  recycled: number;
}
interface Agent {
  id: string;
  capacity: { slots: number; cpus: number; memoryBytes: number };
  freeSlots: number;
  running: string[];
  images: string[];
  pool: Pool;
  lastSeen: string;
}

const QUOTA_KEYS = ['maxConcurrent', 'ratePerMinute', 'firesPerMinute', 'maxQueued', 'maxTimeoutSeconds', 'maxMemoryBytes', 'maxCpu', 'cpuSecondsPerDay', 'maxOutputBytes'] as const;
const NULLABLE = new Set(['ratePerMinute', 'firesPerMinute', 'maxQueued', 'cpuSecondsPerDay']);

/** One tenant's quota as a form: PATCH /v1/tenants/:id with the fields that changed. */
function TenantQuota({ id }: { id: string }) {
  const [quota, setQuota] = useState<Record<string, number | null> | null>(null);
  const [form, setForm] = useState<Record<string, string>>({});
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState('');
  useEffect(() => {
    api<{ quota: Record<string, number | null> }>(`/v1/tenants/${enc(id)}`).then((t) => {
      setQuota(t.quota);
      setForm(Object.fromEntries(QUOTA_KEYS.map((k) => [k, t.quota[k] === null ? '' : String(t.quota[k] ?? '')])));
    }, setError);
  }, [id]);
  const save = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setSaved('');
    const patch: Record<string, number | string | null> = {};
    for (const k of QUOTA_KEYS) {
      const v = (form[k] ?? '').trim();
      const before = quota?.[k] === null ? '' : String(quota?.[k] ?? '');
      if (v === before) continue;
      patch[k] = v === '' && NULLABLE.has(k) ? null : Number.isFinite(Number(v)) && v !== '' ? Number(v) : v;
    }
    try {
      const t = await api<{ quota: Record<string, number | null> }>(`/v1/tenants/${enc(id)}`, { method: 'PATCH', json: { quota: patch } });
      setQuota(t.quota);
      setSaved('Saved.');
    } catch (x) {
      setError(x);
    }
  };
  if (!quota) return html`<${ProblemBanner} error=${error} />`;
  const err = (k: string) => (error instanceof ApiError ? error.field(`quota.${k}`) : undefined);
  return html`<form class="quota" onSubmit=${save} novalidate aria-label=${`Quota of ${id}`}>
    ${!(error instanceof ApiError && error.problem.errors?.length) && html`<${ProblemBanner} error=${error} />`}
    <div class="grid">${QUOTA_KEYS.map((k) => {
      const fid = `q-${id}-${k}`.replace(/[^\w-]/g, '_');
      const e = err(k);
      return html`<${Field} id=${fid} label=${k} help=${NULLABLE.has(k) ? 'Empty: unlimited.' : ''} error=${e}>
        <input id=${fid} type="text" inputmode="numeric" value=${form[k]} aria-invalid=${e ? 'true' : undefined} aria-describedby=${describedBy(fid, NULLABLE.has(k), e)}
          onInput=${(ev: Event) => setForm({ ...form, [k]: (ev.target as HTMLInputElement).value })} />
      <//>`;
    })}</div>
    <button type="submit">Save quota</button> <span role="status">${saved}</span>
  </form>`;
}

function Tenants() {
  const [ids, setIds] = useState<string[]>([]);
  const [open, setOpen] = useState<string | null>(null);
  const [newId, setNewId] = useState('');
  const [error, setError] = useState<unknown>(null);
  const load = () => api<{ tenants: Array<{ tenant: string }> }>('/v1/usage/all').then((r) => setIds(r.tenants.map((t) => t.tenant)), setError);
  useEffect(() => {
    load();
  }, []);
  const create = async (e: Event) => {
    e.preventDefault();
    setError(null);
    try {
      await api('/v1/tenants', { method: 'POST', json: { id: newId.trim() } });
      setNewId('');
      await load();
    } catch (x) {
      setError(x);
    }
  };
  const idErr = error instanceof ApiError ? error.field('id') : undefined;
  return html`<section aria-labelledby="tenants-h"><h2 id="tenants-h">Tenants</h2>
    ${!idErr && html`<${ProblemBanner} error=${error} />`}
    <ul class="plain">${ids.map((id) => html`<li class="tenant">
      <button type="button" class="linkish" aria-expanded=${open === id} onClick=${() => setOpen(open === id ? null : id)}>${id}</button>
      ${open === id && html`<${TenantQuota} id=${id} />`}</li>`)}</ul>
    <form class="row" onSubmit=${create} novalidate>
      <${Field} id="new-tenant" label="New tenant id" error=${idErr}>
        <input id="new-tenant" type="text" value=${newId} aria-describedby=${describedBy('new-tenant', false, idErr)} onInput=${(e: Event) => setNewId((e.target as HTMLInputElement).value)} />
      <//>
      <button type="submit">Create tenant</button>
    </form>
  </section>`;
}

function Agents() {
  const [agents, setAgents] = useState<Agent[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    const load = () => api<{ agents: Agent[] }>('/v1/agents').then((r) => setAgents(r.agents), setError);
    load();
    const t = setInterval(load, 5000);
    return () => clearInterval(t);
  }, []);
  return html`<section aria-labelledby="agents-h"><h2 id="agents-h">Agents</h2>
    <${ProblemBanner} error=${error} />
    ${agents?.length === 0 && html`<p class="muted">No agent is connected.</p>`}
    ${agents?.map((a) => {
      const warm = new Map<string, number>();
      for (const w of a.pool.warm) warm.set(w.image, (warm.get(w.image) ?? 0) + 1);
      const images = [...new Set([...a.images, ...Object.keys(a.pool.blank), ...warm.keys()])];
      return html`<div class="card agent"><h3>${a.id}</h3>
        <p>Slots in use: <strong>${a.capacity.slots - a.freeSlots}</strong> of ${a.capacity.slots} · ${a.capacity.cpus} CPUs · ${fmtBytes(a.capacity.memoryBytes)} · last seen ${fmtTime(a.lastSeen)}</p>
        <p>${a.pool.containers} containers: ${a.pool.busy} busy, ${a.pool.recycled} recycled</p>
        <table class="narrow"><caption>Pool by image</caption><thead><tr><th scope="col">Image</th><th scope="col">Blank</th><th scope="col">Warm</th></tr></thead>
          <tbody>${images.map((i) => html`<tr><td>${i}</td><td>${a.pool.blank[i] ?? 0}</td><td>${warm.get(i) ?? 0}</td></tr>`)}</tbody></table></div>`;
    })}
  </section>`;
}

function Images() {
  const [images, setImages] = useState<Image[]>([]);
  useEffect(() => {
    api<{ images: Image[] }>('/v1/images').then((r) => setImages(r.images), () => {});
  }, []);
  return html`<section aria-labelledby="images-h"><h2 id="images-h">Images</h2>
    <table class="narrow"><thead><tr><th scope="col">Image</th><th scope="col">Agents</th></tr></thead>
      <tbody>${images.map((i) => html`<tr><td>${i.name}</td><td>${i.agents?.join(', ') || 'none'}</td></tr>`)}</tbody></table></section>`;
}

export function Admin() {
  return html`<${Page} title="Admin"><${Tenants} /><${Agents} /><${Images} /><//>`;
}
