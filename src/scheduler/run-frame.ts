import { GatewayMessage, MAX_FRAME_BYTES } from '../protocol/messages.js';

export type RunFrame = Extract<GatewayMessage, { type: 'run' }>;

/**
 * Encodes a `run` frame. The spec, nearly all of the frame, is encoded once by the caller and
 * spliced in, so the size measured before the claim is the size sent after it (only the fence
 * and attempt number differ, and they are numbers of bounded length).
 */
export function encodeRun(frame: Omit<RunFrame, 'spec'>, specJson: string): string {
  return `{"type":"run","jobId":${JSON.stringify(frame.jobId)},"fence":${frame.fence},"tenant":${JSON.stringify(frame.tenant)},"attempt":${frame.attempt},"spec":${specJson}}`;
}

/** Room for the fence and attempt number the claim assigns, over the placeholders measured. */
const NUMBER_ROOM = 2 * String(Number.MAX_SAFE_INTEGER).length;

/**
 * Why the agent would refuse `frame` (encoded as `specJson` for its spec), or undefined when it
 * would take it: the frame is checked with the agent's own schema (GatewayMessage) and against
 * the frame limit, since a frame over `maxPayload` makes ws close the whole link.
 */
export function runFrameProblem(frame: RunFrame, specJson: string): string | undefined {
  const parsed = GatewayMessage.safeParse(frame);
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.')}: ${i.message}`);
    return `the job's run frame does not match the agent protocol (${issues.join('; ')})`;
  }
  const bytes = Buffer.byteLength(encodeRun(frame, specJson)) + NUMBER_ROOM;
  if (bytes > MAX_FRAME_BYTES) return `the job's run frame would be ${bytes} bytes; agents accept frames of at most ${MAX_FRAME_BYTES} bytes`;
  return undefined;
}
