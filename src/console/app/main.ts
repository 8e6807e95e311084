import 'uplot/dist/uPlot.min.css';
import './app.css';
import { html, render } from 'htm/preact';
import { useEffect, useState } from 'preact/hooks';
import { claims, token, type Claims } from './api.js';
import { href, useRoute, type Route } from './router.js';
import { SignIn } from './pages/signin.js';
import { Submit } from './pages/submit.js';
import { Jobs } from './pages/jobs.js';
import { JobDetail } from './pages/job.js';
import { Functions } from './pages/functions.js';
import { FunctionDetail } from './pages/function.js';
import { UsagePage } from './pages/usage.js';
import { Admin } from './pages/admin.js';

function pageFor(route: Route, who: Claims) {
  const [first, second] = route.parts;
  const tenant = Boolean(who.tenant);
  const admin = who.scopes.includes('admin');
  if (first === 'admin' && admin) return html`<${Admin} />`;
  if (!tenant) return admin ? html`<${Admin} />` : html`<p>This token names no tenant and has no admin scope.</p>`;
  switch (first) {
    case 'submit':
      return html`<${Submit} route=${route} />`;
    case 'jobs':
      return second ? html`<${JobDetail} id=${second} />` : html`<${Jobs} route=${route} />`;
    case 'functions':
      return second !== undefined ? html`<${FunctionDetail} name=${second} />` : html`<${Functions} />`;
    case 'usage':
      return html`<${UsagePage} />`;
    default:
      return html`<${Jobs} route=${route} />`;
  }
}

function Nav({ who, current, onSignOut }: { who: Claims; current: string; onSignOut: () => void }) {
  const links: Array<[string, string]> = [];
  if (who.tenant) links.push(['jobs', 'Jobs'], ['submit', 'Submit'], ['functions', 'Functions'], ['usage', 'Usage']);
  if (who.scopes.includes('admin')) links.push(['admin', 'Admin']);
  return html`<header class="top">
    <a class="brand" href="#/">corral</a>
    <nav aria-label="Main"><ul>
      ${links.map(([to, label]) => html`<li><a href=${href(to)} aria-current=${current === to ? 'page' : undefined}>${label}</a></li>`)}
    </ul></nav>
    <div class="who"><span>${who.tenant ? `tenant ${who.tenant}` : 'admin'}</span>
      <button type="button" class="secondary" onClick=${onSignOut}>Sign out</button></div>
  </header>`;
}

function App() {
  const [jwt, setJwt] = useState(token.get());
  const route = useRoute();
  useEffect(() => {
    const out = () => {
      token.clear();
      setJwt(null);
    };
    window.addEventListener('corral:unauthorized', out);
    return () => window.removeEventListener('corral:unauthorized', out);
  }, []);
  // Moving between pages puts focus on the new page's heading, so keyboard and screen-reader
  // users land where the content is.
  useEffect(() => {
    document.getElementById('page-title')?.focus({ preventScroll: true });
  }, [route.parts.join('/')]);
  const who = jwt ? claims(jwt) : null;
  if (!jwt || !who) {
    return html`<main id="main"><${SignIn} onSignIn=${(t: string) => { token.set(t); setJwt(t); }} /></main>`;
  }
  const current = route.parts[0] ?? (who.tenant ? 'jobs' : 'admin');
  return html`<a class="skip" href="#main" onClick=${(e: Event) => { e.preventDefault(); document.getElementById('page-title')?.focus(); }}>Skip to content</a>
    <${Nav} who=${who} current=${current} onSignOut=${() => { token.clear(); setJwt(null); location.hash = ''; }} />
    <main id="main">${pageFor(route, who)}</main>`;
}

render(html`<${App} />`, document.getElementById('app')!);
