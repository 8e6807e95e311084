import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { api, enc, send } from '../api.js';
import type { Trigger } from '../types.js';
import { ConfirmButton, CopyButton, ProblemBanner, fmtTime } from '../ui.js';

/** A function's triggers. A secret comes back only from create and rotate, and is shown that once. */
export function Triggers({ name }: { name: string }) {
  const [list, setList] = useState<Trigger[]>([]);
  const [kind, setKind] = useState<'standard' | 'github'>('standard');
  const [secret, setSecret] = useState<Trigger | null>(null);
  const [error, setError] = useState<unknown>(null);
  const base = `/v1/functions/${enc(name)}/triggers`;
  const load = () => api<{ triggers: Trigger[] }>(base).then((r) => setList(r.triggers), setError);
  useEffect(() => {
    load();
  }, [name]);
  const run = async (fn: () => Promise<void>) => {
    setError(null);
    try {
      await fn();
      await load();
    } catch (e) {
      setError(e);
    }
  };
  const create = () => run(async () => setSecret(await api<Trigger>(base, { method: 'POST', json: { kind } })));
  const rotate = (id: string) => run(async () => setSecret(await api<Trigger>(`${base}/${enc(id)}/rotate`, { method: 'POST' })));
  const remove = (id: string) => run(async () => {
    await send(`${base}/${enc(id)}`, { method: 'DELETE' });
    if (secret?.id === id) setSecret(null);
  });
  return html`<div class="triggers">
    <${ProblemBanner} error=${error} />
    ${secret?.secret &&
    html`<div class="banner secret" role="status">
      <p><strong>Copy this secret now: it is not shown again.</strong></p>
      <p><label for="secret-value">Secret for ${secret.id}</label></p>
      <input id="secret-value" class="mono" type="text" readonly value=${secret.secret} />
      <${CopyButton} text=${secret.secret} label="Copy secret" />
      <p>Hook URL: <code>${secret.url}</code> <${CopyButton} text=${secret.url} label="Copy URL" /></p>
      <button type="button" class="secondary" onClick=${() => setSecret(null)}>I have copied it</button>
    </div>`}
    <div class="row">
      <label for="trigger-kind">Kind</label>
      <select id="trigger-kind" value=${kind} onChange=${(e: Event) => setKind((e.target as HTMLSelectElement).value as 'standard')}>
        <option value="standard">Standard Webhooks</option><option value="github">GitHub</option>
      </select>
      <button type="button" onClick=${create}>Add trigger</button>
    </div>
    ${list.length === 0
      ? html`<p class="muted">No triggers.</p>`
      : html`<ul class="plain">${list.map(
          (t) => html`<li class="trigger"><code>${t.url}</code> <span class="muted">${t.kind}, created ${fmtTime(t.createdAt)}${t.rotatedAt ? `, rotated ${fmtTime(t.rotatedAt)}` : ''}</span>
            <span class="row"><${CopyButton} text=${t.url} label="Copy URL" />
            <button type="button" class="secondary" onClick=${() => rotate(t.id)}>Rotate secret</button>
            <${ConfirmButton} label="Delete…" question="Delete this trigger? Its URL stops working." action="Delete" onConfirm=${() => remove(t.id)} /></span></li>`,
        )}</ul>`}
  </div>`;
}
