import { html } from 'htm/preact';
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { ApiError } from './api.js';

/** Small shared pieces. Everything renders through Preact, which sets text, never markup. */

let nextId = 0;
/** A stable id for label/help/error wiring. */
export const uid = (prefix: string) => `${prefix}-${++nextId}`;

export interface FieldProps {
  id: string;
  label: string;
  help?: string;
  error?: string | undefined;
  children: ComponentChildren;
}

/**
 * A labelled control with its help and error below it. The control must carry `id` and
 * `aria-describedby={describedBy(id, error)}` so screen readers read both.
 */
export function Field({ id, label, help, error, children }: FieldProps) {
  return html`<div class=${`field${error ? ' invalid' : ''}`}>
    <label for=${id}>${label}</label>
    ${children}
    ${help && html`<p class="help" id=${`${id}-help`}>${help}</p>`}
    ${error && html`<p class="error" id=${`${id}-error`} role="alert">${error}</p>`}
  </div>`;
}

export const describedBy = (id: string, help: boolean, error?: string) => [help && `${id}-help`, error && `${id}-error`].filter(Boolean).join(' ') || undefined;

/** A problem as a banner; field errors are shown next to their fields by the form itself. */
export function ProblemBanner({ error }: { error: unknown }) {
  if (!error) return null;
  const e = error instanceof ApiError ? error : null;
  const title = e ? (e.problem.title ?? `HTTP ${e.problem.status}`) : 'Something went wrong';
  const detail = e ? e.problem.detail : String(error);
  return html`<div class="banner error" role="alert"><strong>${title}</strong>${detail && html` — ${detail}`}</div>`;
}

export function StateBadge({ state }: { state: string }) {
  return html`<span class=${`badge state-${state.replace(/[^a-z_]/g, '')}`}>${state.replace('_', ' ')}</span>`;
}

export const fmtTime = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString() : '—');

export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export function fmtDuration(from: string | null, to: string | null): string {
  if (!from) return '—';
  const ms = (to ? Date.parse(to) : Date.now()) - Date.parse(from);
  return ms < 1000 ? `${ms} ms` : ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60_000)} min`;
}

export const fmtCommand = (c: string | string[]) => (Array.isArray(c) ? JSON.stringify(c) : c);

export const fmtNum = (n: number | null | undefined, digits = 2) => (n === null || n === undefined ? '—' : Number.isInteger(n) ? String(n) : n.toFixed(digits));

/** Copies text; answers whether it worked (clipboard access can be refused). */
export async function copy(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

export function CopyButton({ text, label }: { text: string; label: string }) {
  return html`<button type="button" class="secondary" onClick=${async (e: Event) => {
    const b = e.currentTarget as HTMLButtonElement;
    b.textContent = (await copy(text)) ? 'Copied' : 'Copy failed: select and copy';
  }}>${label}</button>`;
}

export function Page({ title, children, actions }: { title: string; children: ComponentChildren; actions?: ComponentChildren }) {
  return html`<section class="page" aria-labelledby="page-title">
    <header class="page-head"><h1 id="page-title" tabindex="-1">${title}</h1>${actions && html`<div class="actions">${actions}</div>`}</header>
    ${children}
  </section>`;
}

/**
 * A destructive action behind a confirm, in place: "Delete…" opens the question with the action
 * and Keep. Focus goes to Keep when it opens (Enter twice must not destroy anything), and back
 * to "Delete…" when Keep or Escape closes it, so it works from the keyboard alone.
 */
export function ConfirmButton({ label, question, action, onConfirm }: { label: string; question: string; action: string; onConfirm: () => void }) {
  const [open, setOpen] = useState(false);
  const opener = useRef<HTMLButtonElement>(null);
  const keep = useRef<HTMLButtonElement>(null);
  const closedByUser = useRef(false);
  useEffect(() => {
    if (open) keep.current?.focus();
    else if (closedByUser.current) opener.current?.focus();
    closedByUser.current = false;
  }, [open]);
  const close = () => {
    closedByUser.current = true;
    setOpen(false);
  };
  if (!open) return html`<button type="button" class="secondary" ref=${opener} onClick=${() => setOpen(true)}>${label}</button>`;
  return html`<span class="confirm" role="group" aria-label="Confirm delete" onKeyDown=${(e: KeyboardEvent) => e.key === 'Escape' && close()}>${question}
    <button type="button" class="danger" onClick=${onConfirm}>${action}</button>
    <button type="button" class="secondary" ref=${keep} onClick=${close}>Keep</button></span>`;
}
