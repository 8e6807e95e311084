import { html } from 'htm/preact';
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import { enc } from './api.js';
import { follow } from './sse.js';

interface Chunk {
  attempt: number;
  stream: 'stdout' | 'stderr';
  text: string;
}

/** More than this much text in the page is cut from the front; the API keeps it all. */
const MAX_CHARS = 1_000_000;

/**
 * A job's output, live until it ends: a fixed-height box (nothing around it moves as lines
 * arrive) that keeps to the bottom unless the reader scrolled up. stderr is marked by colour and
 * by a side rule, so the two streams differ without colour too.
 */
export function Output({ jobId, onEnd }: { jobId: string; onEnd: () => void }) {
  const [chunks, setChunks] = useState<Chunk[]>([]);
  const [status, setStatus] = useState<'streaming' | 'ended' | 'failed'>('streaming');
  const box = useRef<HTMLPreElement>(null);
  const stick = useRef(true);
  useEffect(() => {
    const ac = new AbortController();
    setChunks([]);
    setStatus('streaming');
    let total = 0;
    follow(
      `/v1/jobs/${enc(jobId)}/output?follow=1`,
      (e) => {
        if (e.event === 'end') {
          setStatus('ended');
          onEnd();
          return;
        }
        if (e.event !== 'stdout' && e.event !== 'stderr') return;
        const chunk: Chunk = { attempt: Number(e.id) || 1, stream: e.event, text: e.data };
        total += chunk.text.length;
        setChunks((cs) => {
          const next = [...cs, chunk];
          while (total > MAX_CHARS && next.length > 1) total -= next.shift()!.text.length;
          return next;
        });
      },
      ac.signal,
    ).then(
      () => !ac.signal.aborted && setStatus((s) => (s === 'streaming' ? 'ended' : s)),
      () => !ac.signal.aborted && setStatus('failed'),
    );
    return () => ac.abort();
  }, [jobId]);
  useLayoutEffect(() => {
    const el = box.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [chunks]);
  const onScroll = () => {
    const el = box.current;
    if (el) stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
  };
  let lastAttempt = 0;
  return html`<div class="output-wrap">
    <div class="output-head">
      <h2 id="output-title">Output</h2>
      <span class="legend"><span class="out">stdout</span> <span class="err">stderr</span></span>
      <span class="muted" aria-live="polite">${status === 'streaming' ? 'live' : status === 'failed' ? 'stream interrupted: reload to read the rest' : 'complete'}</span>
    </div>
    <pre class="output" ref=${box} onScroll=${onScroll} tabindex="0" aria-labelledby="output-title" data-status=${status}>${chunks.map((c, i) => {
      const sep = c.attempt !== lastAttempt && lastAttempt !== 0 ? html`<span class="sep">── attempt ${c.attempt} ──\n</span>` : null;
      lastAttempt = c.attempt;
      return html`${sep}<span key=${i} class=${c.stream === 'stderr' ? 'err' : 'out'}>${c.text}</span>`;
    })}${chunks.length === 0 && html`<span class="muted">${status === 'streaming' ? 'Waiting for output…' : 'No output.'}</span>`}</pre>
  </div>`;
}
