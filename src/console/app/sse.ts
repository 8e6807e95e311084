import { createParser, type EventSourceMessage } from 'eventsource-parser';
import { send } from './api.js';

/**
 * Reads a server-sent event stream with fetch, so the request can carry the Authorization header
 * (EventSource cannot). Resolves when the stream ends or `signal` aborts.
 */
export async function follow(path: string, onEvent: (e: EventSourceMessage) => void, signal: AbortSignal): Promise<void> {
  const res = await send(path, { headers: { accept: 'text/event-stream' }, signal });
  if (!res.body) return;
  const parser = createParser({ onEvent });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      parser.feed(value);
    }
  } catch (e) {
    if (!signal.aborted) throw e;
  } finally {
    reader.releaseLock();
  }
}
