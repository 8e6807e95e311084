import type { SSEStreamingApi } from 'hono/streaming';
import { FINAL_STATES, type JobState } from '../queue/states.js';
import type { Services } from '../services.js';
import type { Stream } from '../output/store.js';

/**
 * Streams a job's output as server-sent events: what is stored first, then chunks as agents
 * send them, then an `end` event with the job's final state. Each event names its attempt and
 * stream; data is the chunk as UTF-8 text.
 */
export async function followOutput(s: Services, tenant: string, jobId: string, stream: Stream | undefined, sse: SSEStreamingApi, signal: AbortSignal): Promise<void> {
  const queue: Array<{ attempt: number; stream: Stream; data: Buffer }> = [];
  let wake: (() => void) | undefined;
  const onChunk = (ch: { jobId: string; attempt: number; stream: Stream; data: Buffer }) => {
    if (ch.jobId !== jobId || (stream && ch.stream !== stream)) return;
    queue.push(ch);
    wake?.();
  };
  const onEnd = ({ jobId: id }: { jobId: string }) => {
    if (id === jobId) wake?.();
  };
  s.output.on('chunk', onChunk);
  s.machine.on('job:ended', onEnd);
  signal.addEventListener('abort', () => wake?.(), { once: true });
  try {
    // Read what is stored in the same tick as subscribing, so no chunk is sent twice or missed.
    const job = s.jobs.get(tenant, jobId);
    const stored = job.attempts.flatMap((a) => s.output.read(jobId, a.n, stream).map((ch) => ({ ...ch, attempt: a.n })));
    for (const ch of stored) await send(sse, ch.attempt, ch.stream, ch.data);
    let state: JobState = job.state;
    while (!FINAL_STATES.has(state) && !signal.aborted) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        // A periodic look keeps a follower honest even if it missed the end event.
        setTimeout(resolve, 15_000).unref();
      });
      wake = undefined;
      while (queue.length) {
        const ch = queue.shift()!;
        await send(sse, ch.attempt, ch.stream, ch.data);
      }
      state = s.jobs.get(tenant, jobId).state;
    }
    while (queue.length) {
      const ch = queue.shift()!;
      await send(sse, ch.attempt, ch.stream, ch.data);
    }
    const final = s.jobs.get(tenant, jobId);
    await s.store.durable();
    await sse.writeSSE({ event: 'end', data: JSON.stringify({ state: final.state, exitCode: final.exitCode, reason: final.reason }) });
  } catch {
    // The job was deleted or the client went away: the stream just ends.
  } finally {
    s.output.off('chunk', onChunk);
    s.machine.off('job:ended', onEnd);
  }
}

function send(sse: SSEStreamingApi, attempt: number, stream: Stream, data: Buffer) {
  return sse.writeSSE({ event: stream, id: String(attempt), data: data.toString('utf8') });
}
