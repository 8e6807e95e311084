import { afterEach, describe, expect, it } from 'vitest';
import { mintToken } from '../src/auth/tokens.js';
import { loopbackGateway, type LoopbackGateway } from './helpers/fake-agent.js';
import { runCli } from './helpers/process.js';

/** `corral usage` (the built CLI, as npm test builds it) against a real gateway on loopback. */

let lb: LoopbackGateway | undefined;
afterEach(async () => {
  await lb?.close();
  lb = undefined;
});

describe('corral usage', () => {
  it('prints now, the budget left and a table of the last days; --json is the API answer; --tenant needs admin', async () => {
    lb = await loopbackGateway();
    const token = await lb.tenant('acme', { cpuSecondsPerDay: 3600 });
    expect((await lb.req('POST', '/v1/jobs', token, { command: 'true' })).status).toBe(202);
    const env = { CORRAL_URL: lb.url, CORRAL_TOKEN: token };

    const text = await runCli(['usage', '--days', '3'], env);
    expect(text.code).toBe(0);
    const lines = text.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe('tenant acme');
    expect(lines[1]).toMatch(/^now: 1 queued, 0 running, oldest waiting \d+ s$/);
    expect(lines[2]).toBe('CPU today: 0 of 3600 s used (running jobs included), 3600 s left');
    expect(lines[4]).toMatch(/^day \(UTC\)\s+jobs\s+attempts\s+cpu s\s+wall s\s+GB s\s+peak mem\s+failures$/);
    expect(lines.slice(5)).toHaveLength(3);
    expect(lines[5]).toMatch(new RegExp(`^${new Date().toISOString().slice(0, 10)}\\s+0\\s+0\\s+0\\s+0\\s+0\\s+0\\s+-$`));

    const json = await runCli(['usage', '--json'], env);
    expect(JSON.parse(json.stdout)).toMatchObject({ tenant: 'acme', now: { queued: 1 }, budget: { leftToday: 3600 } });

    const denied = await runCli(['usage', '--tenant', 'acme'], env);
    expect(denied.code).toBe(125);
    expect(denied.stderr).toMatch(/403/);

    const admin = await mintToken({ secret: lb.gateway.services.secret, issuer: 'corral', audience: 'corral', sub: 'admin', scopes: ['admin'], ttlSeconds: 600 });
    const one = await runCli(['usage', '--tenant', 'acme'], { ...env, CORRAL_TOKEN: admin });
    expect(one.stdout.split('\n')[0]).toBe('tenant acme');
    const all = await runCli(['usage', '--tenant', 'all'], { ...env, CORRAL_TOKEN: admin });
    expect(all.stdout).toMatch(/^acme\s+1\s+0\s+0\s+0\s+3600\s+0\s+-$/m);

    const bad = await runCli(['usage', '--days', '31'], env);
    expect(bad.code).toBe(2);
  });
});
