import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT_FLAGS, loadAgentConfig } from '../../agent/config.js';
import { startAgent } from '../../agent/agent.js';
import { buildBusybox, listImages } from '../../agent/lxc/images.js';
import { mintToken } from '../auth/tokens.js';
import { GATEWAY_FLAGS, loadGatewayConfig } from '../config.js';
import { startGateway } from '../gateway.js';
import { type Args, onlyFlags } from './args.js';
import { printFirstStart, stopOnSignals } from './gateway.js';

export const UP_HELP = `corral up [gateway flags] [agent flags]

All-in-one: the gateway and a local agent with a warm pool on this machine. Builds the busybox
image on first use, creates the tenant "default", and writes its token to $CORRAL_DATA/default.token.`;

const TOKEN_TTL = 365 * 86400;

export async function upCommand(args: Args): Promise<void> {
  const agentOnly = AGENT_FLAGS.filter((f) => !['gateway', 'token', 'logLevel'].includes(f));
  onlyFlags(args.flags, [...GATEWAY_FLAGS, 'data', ...agentOnly.map((f) => f.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()))]);
  const gwFlags = Object.fromEntries(Object.entries(args.flags).filter(([k]) => GATEWAY_FLAGS.includes(k) || k === 'data'));
  const config = loadGatewayConfig(gwFlags);
  const host = loadAgentConfig({ gateway: 'ws://x', token: 'x' });
  if (!(await listImages(host)).includes('busybox')) {
    process.stderr.write('building the busybox image (offline, once)…\n');
    await buildBusybox(host);
  }
  const gateway = await startGateway(config);
  printFirstStart(gateway);
  const s = gateway.services;
  const sign = (o: { sub: string; tenant?: string; scopes: Parameters<typeof mintToken>[0]['scopes'] }) =>
    mintToken({ secret: s.secret, issuer: config.jwtIssuer, audience: config.jwtAudience, ttlSeconds: TOKEN_TTL, ...o });
  const agentFlags = Object.fromEntries(Object.entries(args.flags).filter(([k]) => !GATEWAY_FLAGS.includes(k) && k !== 'data'));
  const port = (gateway.server.address() as { port: number }).port;
  const agent = await startAgent(
    loadAgentConfig({
      ...agentFlags,
      gateway: `ws://127.0.0.1:${port}`,
      token: await sign({ sub: 'local-agent', scopes: ['agent'] }),
      name: typeof args.flags.name === 'string' ? args.flags.name : 'local',
      'log-level': config.logLevel,
    }),
  );

  const tokenFile = join(config.dataDir, 'default.token');
  if (!s.tenants.exists('default')) await s.tenants.create('default');
  if (!existsSync(tokenFile)) {
    writeFileSync(tokenFile, (await sign({ sub: 'default-cli', tenant: 'default', scopes: ['jobs:read', 'jobs:write', 'functions:read', 'functions:write'] })) + '\n', { mode: 0o600 });
  }
  const url = `http://${config.host}:${port}`;
  process.stderr.write(
    [
      '',
      `corral is up at ${url} with a local agent and ${agent.images.join(', ') || 'no'} image(s).`,
      '',
      'Run a first job (in another terminal, from this directory):',
      `  npm run -s corral -- run -- echo hello from a container`,
      'or with curl:',
      `  curl -s -H "authorization: Bearer $(cat ${tokenFile})" -H 'content-type: application/json' \\`,
      `       -d '{"command":"echo hello; uname -a"}' '${url}/v1/jobs?wait=30'`,
      `API reference: ${url}/docs`,
      '',
    ].join('\n'),
  );
  stopOnSignals(async () => {
    await agent.stop();
    await gateway.close();
  });
}
