import type { Duplex } from 'node:stream';
import { PROBLEMS, type ProblemCode } from './errors.js';

/**
 * Requests Node's HTTP parser refuses before the app sees them (a malformed request line, a bad
 * chunk size, Content-Length with Transfer-Encoding, headers past the size limit) get a
 * problem+json answer like every other refusal, instead of Node's bare status line.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  // A response already under way on this connection (a pipelined request after a follow, say)
  // must not have an answer spliced into it: the connection just ends.
  const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
  if (err.code === 'ECONNRESET' || !socket.writable || inFlight) {
    socket.destroy();
    return;
  }
  const [code, field, detail]: [ProblemCode, string, string] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? ['headers_too_large', '(headers)', 'the request line and headers are larger than the gateway accepts']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? ['request_timeout', '(request)', 'the request did not arrive in time']
        : ['bad_request', '(request)', 'the request is not valid HTTP/1.1'];
  const { status, title } = PROBLEMS[code];
  const body = JSON.stringify({ type: `/problems/${code}`, title, status, detail, errors: [{ field, message: detail }] });
  // Destroyed once written, as Node's own handler does: a request half read on this connection
  // then ends at once instead of waiting for the request timeout.
  socket.end(`HTTP/1.1 ${status} ${title}\r\ncontent-type: application/problem+json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`, () => socket.destroy());
}
