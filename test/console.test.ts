import AxeBuilder from '@axe-core/playwright';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONSOLE_HEADERS } from '../src/console/routes.js';
import { startCluster, type Client, type Cluster } from './helpers/cluster.js';

/**
 * The web console in a real browser (Debian's chromium driven by playwright-core) against a real
 * gateway, a real agent and real LXC. Needs `npm run build` first (it serves dist/console).
 * Screenshots of each page go to test/artifacts/.
 */

const ARTIFACTS = join(import.meta.dirname, 'artifacts');
const CHROMIUM = process.env.CORRAL_CHROMIUM ?? '/usr/bin/chromium';

let cluster: Cluster;
let acme: Client;
let acmeToken: string;
let betaToken: string;
let adminToken: string;
let acmeFunctions: (method: string, path: string) => Promise<Response>;
let context: BrowserContext;
let profile: string;
const dialogs: string[] = [];
const cspErrors: string[] = [];

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  cluster = await startCluster({ agents: ['c1'] });
  acme = await cluster.tenant('acme');
  await cluster.tenant('beta');
  const tenantScopes = ['jobs:read', 'jobs:write', 'functions:read', 'functions:write'] as const;
  acmeToken = await cluster.token({ tenant: 'acme', scopes: [...tenantScopes] });
  betaToken = await cluster.token({ tenant: 'beta', scopes: [...tenantScopes] });
  adminToken = await cluster.token({ scopes: ['admin'] });
  acmeFunctions = (method, path) => fetch(cluster.url + path, { method, headers: { authorization: `Bearer ${acmeToken}` } });
  profile = mkdtempSync(join(tmpdir(), 'corral-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport: { width: 1100, height: 760 },
  });
  context.on('page', watch);
});

afterAll(async () => {
  await context?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  await cluster?.stop();
});

/** Any dialog (alert from injected markup) or CSP violation is recorded and fails the run. */
function watch(page: Page): void {
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    void d.dismiss();
  });
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) cspErrors.push(m.text());
  });
}

async function signIn(token: string, hash = ''): Promise<Page> {
  const page = await context.newPage();
  await page.goto(`${cluster.url}/`);
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('navigation', { name: 'Main' }).waitFor();
  if (hash) await page.goto(`${cluster.url}/${hash}`);
  return page;
}

async function axe(page: Page, name: string): Promise<void> {
  const result = await new AxeBuilder({ page }).analyze();
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  expect(bad.map((v) => `${name}: ${v.id} ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`)).toEqual([]);
}

const shot = (page: Page, name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
const heading = (page: Page) => page.locator('#page-title');

describe('the console', () => {
  it('is served at / with a strict Content-Security-Policy and no inline script', async () => {
    const res = await fetch(`${cluster.url}/`);
    expect(res.status).toBe(200);
    for (const [k, v] of Object.entries(CONSOLE_HEADERS)) expect(res.headers.get(k)).toBe(v);
    expect(res.headers.get('content-security-policy')).not.toContain('unsafe');
    const page = await res.text();
    expect(page).not.toMatch(/<script>|<style|style=/);
    const js = await fetch(`${cluster.url}/console/app.js`);
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(js.headers.get('content-security-policy')).toBe(CONSOLE_HEADERS['content-security-policy']);
  });

  it('signs in, submits through the form, streams the output live and shows the final state', async () => {
    const page = await signIn(acmeToken);
    await page.getByRole('link', { name: 'Submit', exact: true }).click();
    await heading(page).filter({ hasText: 'Submit a job' }).waitFor();
    await shot(page, 'submit');
    await axe(page, 'submit');
    await page.getByLabel('Command').fill('echo first line; echo to stderr >&2; sleep 2; echo last line');
    await page.getByLabel('Name (optional)').fill('отчёт-δοκιμή-1');
    await page.getByRole('button', { name: 'Submit job' }).click();
    await heading(page).filter({ hasText: 'отчёт-δοκιμή-1' }).waitFor();
    // "first line" arrives while the job still runs: the output is live, not read at the end.
    await page.locator('.output .out', { hasText: 'first line' }).waitFor({ timeout: 20_000 });
    expect(await page.locator('.badge').first().textContent()).toBe('running');
    await expect.poll(() => page.locator('.output .err').allTextContents()).toContain('to stderr\n');
    await page.locator('.summary .badge', { hasText: 'succeeded' }).waitFor({ timeout: 20_000 });
    await page.locator('.output[data-status="ended"]').waitFor();
    expect(await page.locator('.output').textContent()).toContain('last line');
    await page.getByRole('cell', { name: 'c1' }).first().waitFor();
    await shot(page, 'job');
    await page.screenshot({ path: join(ARTIFACTS, 'console-readme.png') });
    await axe(page, 'job');

    // The search box finds names by their beginning, in any script: a Cyrillic and Greek prefix
    // finds this job and not another that shares only its Cyrillic part.
    await acme.submit({ command: 'true', name: 'отчёт-другой' });
    await page.getByRole('link', { name: 'Jobs', exact: true }).click();
    await page.getByLabel('Name starts with').fill('отчёт-δο');
    await page.getByRole('button', { name: 'Search' }).click();
    await expect.poll(() => page.locator('table.jobs tbody tr a').allTextContents()).toEqual(['отчёт-δοκιμή-1']);
    expect(new URL(page.url()).hash).toBe(`#/jobs?namePrefix=${encodeURIComponent('отчёт-δο')}`);
    await page.getByLabel('Name starts with').fill('отчёт-');
    await page.getByRole('button', { name: 'Search' }).click();
    await expect.poll(() => page.locator('table.jobs tbody tr a').allTextContents()).toEqual(['отчёт-δοκιμή-1', 'отчёт-другой']); // in name order: δ (U+03B4) before д (U+0434)
    await shot(page, 'jobs');
    await axe(page, 'jobs');
    await page.close();
  });

  it('keeps what is typed in the filters while the job list refreshes', async () => {
    const page = await signIn(acmeToken, '#/jobs');
    await page.locator('.table-wrap[aria-busy="false"]').waitFor();
    await page.getByLabel('Name starts with').fill('half typed');
    await page.getByLabel('State').selectOption('failed');
    await page.getByLabel('Function').fill('nightly');
    // The list polls: the second request after typing starts only once the answer to the first
    // has been rendered, so at least one refresh has redrawn the form by then.
    const isList = (r: { url(): string }) => new URL(r.url()).pathname === '/v1/jobs';
    await page.waitForRequest(isList);
    await page.waitForRequest(isList);
    expect(await page.getByLabel('Name starts with').inputValue()).toBe('half typed');
    expect(await page.getByLabel('State').inputValue()).toBe('failed');
    expect(await page.getByLabel('Function').inputValue()).toBe('nightly');
    expect(new URL(page.url()).hash).toBe('#/jobs');
    await page.close();
  });

  it('shows a bad field’s error next to that field', async () => {
    const page = await signIn(acmeToken, '#/submit');
    await page.getByLabel('Command').fill('true');
    await page.getByLabel('Memory').fill('lots');
    await page.getByLabel('Name (optional)').fill('a/b');
    await page.getByRole('button', { name: 'Submit job' }).click();
    const memory = page.locator('#job-memory-error');
    await memory.waitFor();
    expect(await memory.textContent()).toMatch(/memory|M|bytes/i);
    await page.locator('#job-name-error').waitFor();
    expect(await page.getByLabel('Memory').getAttribute('aria-invalid')).toBe('true');
    expect(await page.getByLabel('Memory').getAttribute('aria-describedby')).toContain('job-memory-error');
    await shot(page, 'submit-errors');
    await axe(page, 'submit-errors');
    await page.close();
  });

  it('cancels a running job and deletes it after a confirm', async () => {
    const { job } = await acme.submit({ command: 'echo started; sleep 60', name: 'long one' });
    const page = await signIn(acmeToken, `#/jobs/${job.id}`);
    await page.locator('.output .out', { hasText: 'started' }).waitFor({ timeout: 20_000 });
    await page.getByRole('button', { name: 'Cancel' }).click();
    await page.locator('.summary .badge', { hasText: 'cancelled' }).waitFor({ timeout: 15_000 });
    expect((await acme.get(job.id)).state).toBe('cancelled');
    await page.getByRole('button', { name: 'Delete…' }).click();
    await page.getByRole('group', { name: 'Confirm delete' }).getByRole('button', { name: 'Delete' }).click();
    await heading(page).filter({ hasText: 'Jobs' }).waitFor();
    expect((await acme.request('GET', `/v1/jobs/${job.id}`)).status).toBe(404);
    await page.close();
  });

  it('re-runs a job with the same request, its stdin included, and says the stdin is kept', async () => {
    const stdin = 'piped in ✓\nsecond line\n';
    const { job } = await acme.submit({ command: 'cat; echo end', stdin, name: 'with stdin' }, 30);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    const page = await signIn(acmeToken, `#/jobs/${job.id}`);
    await page.locator('.output[data-status="ended"]').waitFor({ timeout: 15_000 });
    expect(await page.locator('.kv').textContent()).toContain(`Standard input${Buffer.byteLength(stdin)} bytes (kept)`);
    await page.getByRole('button', { name: 'Re-run' }).click();
    await page.waitForURL((u) => u.hash.startsWith('#/jobs/') && !u.hash.includes(job.id));
    const rerunId = decodeURIComponent(new URL(page.url()).hash.slice('#/jobs/'.length));
    await page.locator('.summary .badge', { hasText: 'succeeded' }).waitFor({ timeout: 20_000 });
    await page.locator('.output[data-status="ended"]').waitFor();
    expect(await page.locator('.output .out').allTextContents()).toEqual([`${stdin}end\n`]);
    expect(await acme.output(rerunId, 'stdout')).toBe(`${stdin}end\n`);
    expect(await heading(page).textContent()).toBe(rerunId);
    await page.close();
  });

  it('renders hostile job output and names as text', async () => {
    const { job } = await acme.submit({ command: `echo '<img src=x onerror=alert(1)>'; echo '<script>alert(2)</script>' >&2`, name: '<b id="pwn">bold<img src=x onerror=alert(3)>' }, 30);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    const page = await signIn(acmeToken, `#/jobs/${job.id}`);
    await page.locator('.output[data-status="ended"]').waitFor({ timeout: 15_000 });
    expect(await page.locator('.output').textContent()).toContain('<img src=x onerror=alert(1)>');
    expect(await heading(page).textContent()).toBe('<b id="pwn">bold<img src=x onerror=alert(3)>');
    await page.goto(`${cluster.url}/#/jobs`);
    await page.locator('table.jobs tbody tr').first().waitFor();
    expect(await page.locator('#pwn').count()).toBe(0);
    expect(await page.locator('main img').count()).toBe(0);
    expect(await page.evaluate(() => document.querySelectorAll('script:not([src])').length)).toBe(0);
    expect(dialogs).toEqual([]);
    await page.close();
  });

  it("tenant B's token cannot see tenant A's job", async () => {
    const { job } = await acme.submit({ command: 'true', name: 'acme-private' });
    const page = await signIn(betaToken, `#/jobs/${job.id}`);
    await page.locator('.banner.error').waitFor();
    expect(await page.locator('.banner.error').textContent()).toMatch(/not found/i);
    await page.goto(`${cluster.url}/#/jobs`);
    await page.locator('.empty').waitFor();
    expect(await page.locator('main').textContent()).not.toContain('acme-private');
    await page.close();
  });

  it('creates a function from the page, invokes it and adds a trigger whose secret shows once', async () => {
    const page = await signIn(acmeToken, '#/functions');
    await page.getByRole('button', { name: 'New function' }).click();
    await page.getByLabel('Name', { exact: true }).fill('shout');
    await page.getByLabel('Command').fill('tr a-z A-Z');
    await page.getByRole('button', { name: 'Create function' }).click();
    await heading(page).filter({ hasText: 'Function shout' }).waitFor();
    await page.getByLabel('Request body').fill('hello from the page');
    await page.getByRole('button', { name: 'Invoke and wait' }).click();
    await page.locator('.answer pre', { hasText: 'HELLO FROM THE PAGE' }).waitFor({ timeout: 30_000 });
    expect(await page.locator('.answer').textContent()).toContain('200');
    await page.getByRole('button', { name: 'Add trigger' }).click();
    const secret = page.locator('#secret-value');
    await secret.waitFor();
    expect(await secret.inputValue()).toMatch(/^whsec_/);
    expect(await page.locator('.trigger').count()).toBe(1);
    await shot(page, 'function');
    await axe(page, 'function');
    await page.getByRole('button', { name: 'I have copied it' }).click();
    expect(await page.locator('#secret-value').count()).toBe(0);

    // Deleting a trigger asks first, from the keyboard alone: Enter opens the question with
    // focus on Keep (a second Enter deletes nothing), Escape puts focus back on "Delete…".
    const triggers = async () => ((await (await acmeFunctions('GET', '/v1/functions/shout/triggers')).json()) as { triggers: unknown[] }).triggers.length;
    const ask = page.locator('.trigger').getByRole('button', { name: 'Delete…' });
    const focused = () => page.evaluate(() => document.activeElement?.textContent ?? '');
    const group = page.getByRole('group', { name: 'Confirm delete' });
    // Each key waits for the page to have answered the one before: focus moves in an effect after the render.
    const open = async () => {
      await page.keyboard.press('Enter');
      await group.waitFor();
      await expect.poll(focused).toBe('Keep');
    };
    const closed = async () => {
      await ask.waitFor();
      await expect.poll(focused).toBe('Delete…');
    };
    await ask.focus();
    await open();
    await page.keyboard.press('Enter');
    await closed();
    await open();
    await page.keyboard.press('Escape');
    await closed();
    expect(await triggers()).toBe(1);
    await open();
    await page.keyboard.press('Shift+Tab');
    await expect.poll(focused).toBe('Delete');
    await page.keyboard.press('Enter');
    await page.getByText('No triggers.').waitFor();
    expect(await triggers()).toBe(0);
    await page.goto(`${cluster.url}/#/functions`);
    await page.getByRole('link', { name: 'shout' }).waitFor();
    await shot(page, 'functions');
    await axe(page, 'functions');
    await page.close();
  });

  it('charts jobs per hour and CPU-seconds per day with data once jobs have run', async () => {
    const page = await signIn(acmeToken, '#/usage');
    const perHour = page.locator('.chart', { has: page.getByRole('img', { name: /^Jobs per hour/ }) });
    const canvas = perHour.locator('canvas');
    await canvas.waitFor();
    const box = await canvas.boundingBox();
    expect(box!.width).toBeGreaterThan(100);
    expect(box!.height).toBeGreaterThan(50);
    // The jobs that ran in this file ended this hour: the chart's numbers say so.
    const label = (await perHour.getByRole('img').getAttribute('aria-label'))!;
    const [, ended, failed] = /: (\d+) ended, (\d+) of them failed$/.exec(label)!;
    expect(Number(ended)).toBeGreaterThanOrEqual(4);
    expect(Number(failed)).toBeGreaterThanOrEqual(1); // the job cancelled above
    const { hours } = (await (await acme.request('GET', '/v1/usage')).json()) as { hours: Array<{ hour: string; jobs: number; failures: number }> };
    await page.getByText('Per hour, as a table').click();
    const rows = page.getByRole('table', { name: 'Jobs per hour' }).locator('tbody tr');
    await rows.first().waitFor();
    expect(await rows.evaluateAll((trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)))).toEqual(
      hours.filter((h) => h.jobs > 0).map((h) => [`${h.hour.replace('T', ' ')}:00`, String(h.jobs), String(h.failures)]),
    );
    // The canvas has something drawn on it: bars, not an empty frame.
    const painted = await canvas.evaluate((c: HTMLCanvasElement) => {
      const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i + 3]! > 0 && !(d[i]! > 240 && d[i + 1]! > 240 && d[i + 2]! > 240)) n++;
      return n;
    });
    expect(painted).toBeGreaterThan(100);
    await expect.poll(() => page.locator('.chart canvas').count()).toBe(2);
    expect(await page.locator('main').textContent()).toContain('cancelled');
    await shot(page, 'usage');
    await axe(page, 'usage');
    await page.close();
  });

  it('labels the charts’ time axes in UTC, as the tables are, whatever the browser’s time zone', async () => {
    // The x-axis strip of each chart (its tick labels, below the plot) drawn in two time zones
    // far apart: the same pixels, since the axis shows UTC hours and days.
    const strips = async (timezoneId: string) => {
      const page = await signIn(acmeToken, '#/usage');
      const cdp = await context.newCDPSession(page);
      await cdp.send('Emulation.setTimezoneOverride', { timezoneId });
      await page.reload();
      await expect.poll(() => page.locator('.chart canvas').count()).toBe(2);
      expect(await page.evaluate(() => new Date(0).getTimezoneOffset())).not.toBe(0);
      const out = await page.locator('.chart canvas').evaluateAll((cs) =>
        (cs as HTMLCanvasElement[]).map((c) => {
          const h = Math.round(c.height * 0.18);
          const d = c.getContext('2d')!.getImageData(0, c.height - h, c.width, h).data;
          let inked = 0;
          for (let i = 0; i < d.length; i += 4) if (d[i + 3]! > 0 && d[i]! < 128) inked++;
          return { inked, pixels: Array.from(d).join(',') };
        }),
      );
      await page.close();
      return out;
    };
    // Both pages must show the same 48 hours: at the turn of an hour, draw them again.
    let west, east, hour;
    do {
      hour = new Date().getUTCHours();
      [west, east] = [await strips('America/New_York'), await strips('Asia/Kolkata')];
    } while (new Date().getUTCHours() !== hour);
    for (const [k, chart] of west.entries()) {
      expect(chart.inked).toBeGreaterThan(50); // tick labels are there
      expect(chart.pixels === east[k]!.pixels).toBe(true);
    }
  });

  it('shows an admin the tenants with their quotas, the agents with their pools, and images', async () => {
    const page = await signIn(adminToken, '#/admin');
    await page.locator('.agent h3', { hasText: 'c1' }).waitFor();
    await page.getByRole('button', { name: 'acme' }).click();
    const field = page.locator('#q-acme-maxConcurrent');
    await field.fill('7');
    await page.getByRole('button', { name: 'Save quota' }).click();
    await page.getByText('Saved.').waitFor();
    expect(cluster.gateway.services.tenants.quota('acme').maxConcurrent).toBe(7);
    await shot(page, 'admin');
    await axe(page, 'admin');
    await page.close();
  });

  it('fits a 375 px wide screen and signs in with the keyboard alone', async () => {
    const page = await context.newPage();
    await page.setViewportSize({ width: 375, height: 740 });
    await page.goto(`${cluster.url}/`);
    await axe(page, 'sign-in');
    await shot(page, 'signin-375');
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('token');
    await page.keyboard.insertText(acmeToken);
    await page.keyboard.press('Tab');
    await page.keyboard.press('Enter');
    await page.locator('table.jobs tbody tr').first().waitFor();
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(375);
    await shot(page, 'jobs-375');
    expect(cspErrors).toEqual([]);
    await page.close();
  });
});
