import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_RUN_FRAME } from '../agent/executor/client.js';
import { mintToken } from '../src/auth/tokens.js';
import { MAX_INVOKE_STDIN_BYTES, WORST_RUN_FRAME_BYTES } from '../src/jobs/spec.js';
import { MAX_FRAME_BYTES } from '../src/protocol/messages.js';
import { fakeAgent, loopbackGateway, type FakeAgent, type LoopbackGateway } from './helpers/fake-agent.js';

/**
 * An invoke at every input limit still fits the agent protocol: the largest body the gateway
 * takes, as base64 in a run frame beside a command and env full of characters JSON escapes
 * sixfold, stays under the frame budget, reaches the agent intact over a real socket, and fits
 * the executor's run request.
 */

let lb: LoopbackGateway | undefined;
let agent: FakeAgent | undefined;
afterEach(async () => {
  await agent?.close();
  await lb?.close();
  lb = agent = undefined;
});

const CTRL = '\x01';

describe('invoke frames are budgeted', () => {
  it('a 1 MiB binary body with a command, env, query and content type at their limits reaches the agent byte for byte, within WORST_RUN_FRAME_BYTES', async () => {
    lb = await loopbackGateway();
    agent = await fakeAgent(lb.url, lb.agentToken, { name: 'frames' });
    await lb.tenant('bulky');
    const token = await mintToken({ secret: lb.gateway.services.secret, issuer: 'corral', audience: 'corral', ttlSeconds: 600, sub: 't', tenant: 'bulky', scopes: ['functions:write', 'jobs:read'] });
    const headers = { authorization: `Bearer ${token}` };
    const put = await fetch(`${lb.url}/v1/functions/worst`, {
      method: 'PUT',
      headers: { ...headers, 'content-type': 'application/json' },
      body: JSON.stringify({ command: CTRL.repeat(64 * 1024), env: { A: CTRL.repeat(64 * 1024 - 3) }, memory: '256M' }),
    });
    expect(put.status).toBe(201);

    const body = randomBytes(MAX_INVOKE_STDIN_BYTES);
    const query = `q=${'%01'.repeat(1364)}`; // 4094 bytes, the query budget
    const contentType = `application/x-${'a'.repeat(1000)}`;
    const res = await fetch(`${lb.url}/v1/functions/worst/invoke?${query}`, { method: 'POST', headers: { ...headers, 'content-type': contentType }, body });
    expect(res.status, await res.clone().text()).toBe(202);

    const run = await agent.nextRun();
    expect(Buffer.from(run.spec.stdinBase64!, 'base64').equals(body)).toBe(true);
    expect(run.spec.env).toMatchObject({ CORRAL_QUERY: query, CORRAL_CONTENT_TYPE: contentType });
    const frameBytes = Buffer.byteLength(JSON.stringify(run));
    expect(frameBytes).toBeGreaterThan(2_150_000);
    expect(frameBytes).toBeLessThanOrEqual(WORST_RUN_FRAME_BYTES);
    expect(MAX_FRAME_BYTES).toBeGreaterThanOrEqual(1.5 * WORST_RUN_FRAME_BYTES);
    // What the agent hands the executor is the raw bytes: argv, env entries and stdin.
    const argv = ['/bin/sh', '-c', run.spec.command as string];
    const execBytes = argv.reduce((n, a) => n + Buffer.byteLength(a) + 1, 0) + Object.entries(run.spec.env).reduce((n, [k, v]) => n + Buffer.byteLength(`${k}=${v}`) + 1, 0) + body.length;
    expect(execBytes + 64 * 1024).toBeLessThan(MAX_RUN_FRAME);
    expect(agent.closed).toBeUndefined();
  });
});
