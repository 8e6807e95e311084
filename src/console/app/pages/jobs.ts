import { html } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { api, qs } from '../api.js';
import { go, href, type Route } from '../router.js';
import { STATES, type Job } from '../types.js';
import { Page, ProblemBanner, StateBadge, fmtCommand, fmtTime } from '../ui.js';

const POLL_MS = 2000;
const PAGE = 25;

/**
 * Jobs, newest first (in name order when searching by name prefix, as the API answers): filters
 * live in the URL so a filtered view can be linked and reloaded.
 */
export function Jobs({ route }: { route: Route }) {
  const state = route.query.get('state') ?? '';
  const prefix = route.query.get('namePrefix') ?? '';
  const fn = route.query.get('function') ?? '';
  const [cursors, setCursors] = useState<string[]>([]);
  const [page, setPage] = useState<{ jobs: Job[]; nextCursor: string | null } | null>(null);
  const [error, setError] = useState<unknown>(null);
  const cursor = cursors[cursors.length - 1];
  const filterKey = `${state}|${prefix}|${fn}`;
  // What is typed stays the form's own until Search: the list redraws every poll, and a field
  // bound to the URL would be reset to it mid-typing.
  const [draft, setDraft] = useState({ state, prefix, fn });
  useEffect(() => {
    setCursors([]);
    setDraft({ state, prefix, fn });
  }, [filterKey]);
  const edit = (k: keyof typeof draft) => (e: Event) => setDraft({ ...draft, [k]: (e.target as HTMLInputElement | HTMLSelectElement).value });
  useEffect(() => {
    let stop = false;
    let timer: ReturnType<typeof setTimeout>;
    const load = async () => {
      try {
        const p = await api<{ jobs: Job[]; nextCursor: string | null }>(`/v1/jobs${qs({ state, namePrefix: prefix, function: fn, cursor, limit: PAGE })}`);
        if (!stop) {
          setPage(p);
          setError(null);
        }
      } catch (e) {
        if (!stop) setError(e);
      }
      // Live state changes by polling; a hidden tab stops asking.
      if (!stop) timer = setTimeout(load, document.hidden ? POLL_MS * 5 : POLL_MS);
    };
    load();
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, [filterKey, cursor]);
  const apply = (e: Event) => {
    e.preventDefault();
    // A name never starts with a space, but a prefix may end with one ("nightly ").
    go(`#/jobs${qs({ state: draft.state, namePrefix: draft.prefix.trimStart(), function: draft.fn.trim() })}`);
  };
  return html`<${Page} title="Jobs" actions=${html`<a class="button" href=${href('submit')}>Submit a job</a>`}>
    <form class="filters" role="search" aria-label="Filter jobs" onSubmit=${apply}>
      <div class="field"><label for="f-name">Name starts with</label>
        <input id="f-name" name="namePrefix" type="search" value=${draft.prefix} onInput=${edit('prefix')} autocomplete="off" aria-describedby="f-name-help" />
        <p class="help" id="f-name-help">Case-sensitive; sorted by name.</p></div>
      <div class="field"><label for="f-state">State</label>
        <select id="f-state" name="state" value=${draft.state} onChange=${edit('state')}>
          <option value="">any</option>
          ${STATES.map((s) => html`<option value=${s}>${s.replace('_', ' ')}</option>`)}
        </select></div>
      <div class="field"><label for="f-function">Function</label>
        <input id="f-function" name="function" type="search" value=${draft.fn} onInput=${edit('fn')} autocomplete="off" /></div>
      <button type="submit">Search</button>
      ${(state || prefix || fn) && html`<a href="#/jobs" class="button secondary">Clear</a>`}
    </form>
    <${ProblemBanner} error=${error} />
    <div class="table-wrap" aria-live="polite" aria-busy=${page ? 'false' : 'true'}>
      <table class="jobs">
        <caption class="sr-only">${prefix ? `Jobs whose name starts with ${prefix}, in name order` : 'Jobs, newest first'}</caption>
        <thead><tr><th scope="col">Job</th><th scope="col">State</th><th scope="col">Command</th><th scope="col">Created</th></tr></thead>
        <tbody>
          ${page?.jobs.map(
            (j) => html`<tr key=${j.id} data-job=${j.id}>
              <td><a href=${href('jobs', j.id)}>${j.name ?? j.id}</a>${j.function && html`<div class="muted">fn ${j.function}</div>`}</td>
              <td><${StateBadge} state=${j.state} /></td>
              <td class="cmd"><code>${fmtCommand(j.command)}</code></td>
              <td>${fmtTime(j.createdAt)}</td>
            </tr>`,
          )}
        </tbody>
      </table>
      ${page && page.jobs.length === 0 && html`<p class="empty">No jobs${state || prefix || fn ? ' match these filters' : ' yet'}.</p>`}
    </div>
    <nav class="pager" aria-label="Pages">
      <button type="button" class="secondary" disabled=${cursors.length === 0} onClick=${() => setCursors(cursors.slice(0, -1))}>${prefix ? 'Previous' : 'Newer'}</button>
      <button type="button" class="secondary" disabled=${!page?.nextCursor} onClick=${() => page?.nextCursor && setCursors([...cursors, page.nextCursor])}>${prefix ? 'Next' : 'Older'}</button>
    </nav>
  <//>`;
}
