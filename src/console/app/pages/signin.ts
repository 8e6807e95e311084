import { html } from 'htm/preact';
import { useState } from 'preact/hooks';
import { claims, token } from '../api.js';
import { Field, ProblemBanner, describedBy } from '../ui.js';

/** Paste a token; it is checked against the API and kept in sessionStorage (this tab only). */
export function SignIn({ onSignIn }: { onSignIn: (t: string) => void }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState<string | undefined>();
  const [failure, setFailure] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    const t = value.trim();
    setFailure(null);
    if (!claims(t)) return setError('This is not a token: paste the whole JWT (three parts separated by dots).');
    setError(undefined);
    setBusy(true);
    try {
      const res = await fetch('/v1/images', { headers: { authorization: `Bearer ${t}` } });
      if (res.status === 401) return setError('The gateway refused this token (expired, or signed for another gateway).');
      if (!res.ok && res.status !== 403) throw new Error(`HTTP ${res.status}`);
      token.set(t);
      onSignIn(t);
    } catch (err) {
      setFailure(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<section class="page signin" aria-labelledby="page-title">
    <h1 id="page-title" tabindex="-1">Sign in to corral</h1>
    <p>Paste a token: <code>corral up</code> writes one for the tenant "default" to <code>.corral/default.token</code>,
      and <code>corral token --tenant ID</code> mints others. It stays in this browser tab only.</p>
    <${ProblemBanner} error=${failure} />
    <form onSubmit=${submit} novalidate>
      <${Field} id="token" label="Token" help="A JWT from corral token or your identity provider." error=${error}>
        <textarea id="token" name="token" rows="4" required autocomplete="off" spellcheck="false"
          aria-invalid=${error ? 'true' : undefined} aria-describedby=${describedBy('token', true, error)}
          value=${value} onInput=${(e: Event) => setValue((e.target as HTMLTextAreaElement).value)}></textarea>
      <//>
      <button type="submit" disabled=${busy}>${busy ? 'Checking…' : 'Sign in'}</button>
    </form>
  </section>`;
}
