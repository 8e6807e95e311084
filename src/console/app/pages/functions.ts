import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { api } from '../api.js';
import { go, href } from '../router.js';
import type { Fn } from '../types.js';
import { Page, ProblemBanner, fmtCommand } from '../ui.js';
import { FunctionForm } from './function-form.js';

export function Functions() {
  const [list, setList] = useState<Fn[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [creating, setCreating] = useState(false);
  useEffect(() => {
    api<{ functions: Fn[] }>('/v1/functions?limit=200').then((r) => setList(r.functions), setError);
  }, []);
  return html`<${Page} title="Functions" actions=${!creating && html`<button type="button" onClick=${() => setCreating(true)}>New function</button>`}>
    <${ProblemBanner} error=${error} />
    ${creating && html`<h2>New function</h2><${FunctionForm} fn=${null} onSaved=${(f: Fn) => go(href('functions', f.name))} />`}
    ${list && list.length === 0 && !creating && html`<p class="empty">No functions yet.</p>`}
    ${list && list.length > 0 &&
    html`<div class="table-wrap"><table>
      <caption class="sr-only">Functions</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Version</th><th scope="col">Image</th><th scope="col">Command</th></tr></thead>
      <tbody>${list.map((f) => html`<tr><td><a href=${href('functions', f.name)}>${f.name}</a>${f.description && html`<div class="muted">${f.description}</div>`}</td>
        <td>${f.version}</td><td>${f.image}</td><td class="cmd"><code>${fmtCommand(f.command)}</code></td></tr>`)}</tbody>
    </table></div>`}
  <//>`;
}
