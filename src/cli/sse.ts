/** One server-sent event: its name, id and data lines joined. */
export interface ServerEvent {
  event: string;
  id: string;
  data: string;
}

/**
 * Reads a `text/event-stream` body event by event until it ends. Comments and keep-alives (no
 * data, default name) are passed through as `message` events with empty data; callers ignore them.
 */
export async function* serverEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<ServerEvent> {
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of body) {
    buf += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = 'message';
      let id = '';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('id:')) id = line.slice(3).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      yield { event, id, data: data.join('\n') };
    }
  }
}

/**
 * Follows a job's output (`GET /v1/jobs/:id/output?follow=1`): stdout events to our stdout,
 * stderr events to our stderr, a marker on stderr when a retry starts a new attempt. Resolves
 * when the gateway ends the stream (the job ended, or was deleted).
 */
export async function followOutput(url: string, headers: Record<string, string>): Promise<Response> {
  const res = await fetch(url, { headers });
  if (!res.ok || !res.body) return res;
  let attempt = '';
  for await (const e of serverEvents(res.body)) {
    if (e.event !== 'stdout' && e.event !== 'stderr') continue;
    if (e.id && attempt && e.id !== attempt) process.stderr.write(`--- attempt ${e.id} ---\n`);
    attempt = e.id || attempt;
    (e.event === 'stdout' ? process.stdout : process.stderr).write(e.data);
  }
  return res;
}
