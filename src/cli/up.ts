import { existsSync } from 'node:fs';
import { ensurePrivateDataDir, lockDataDir, writePrivateFile } from '../datadir.js';
import { join } from 'node:path';
import { AGENT_FLAGS, loadAgentConfig } from '../../agent/config.js';
import { fork } from 'node:child_process';
import { buildBusybox, listImages } from '../../agent/lxc/images.js';
import { mintToken } from '../auth/tokens.js';
import { GATEWAY_FLAGS, loadGatewayConfig } from '../config.js';
import { startGateway } from '../gateway.js';
import { type Args, onlyFlags } from './args.js';
import { printFirstStart } from './gateway.js';
import { childOf, StopSignals, Supervisor } from './supervise.js';

export const UP_HELP = `corral up [gateway flags] [agent flags]

All-in-one: the gateway and a local agent with a warm pool on this machine. Builds the busybox
image on first use, creates the tenant "default", and writes its token to $CORRAL_DATA/default.token.
If the local agent dies, it is restarted (with backoff) while the gateway keeps serving.

SIGTERM or SIGINT (Ctrl-C) stops it: new work is refused, the local agent finishes its running
attempts (up to --drain-ms) and destroys its containers, then the gateway closes (exit 0). A
second signal ends the drain but still waits for every container to be destroyed (exit 1); a
third exits at once and says what was left. One gateway per data directory: another corral up or
corral gateway on the same --data refuses to start (exit 2).`;

const TOKEN_TTL = 365 * 86400;

export async function upCommand(args: Args): Promise<void> {
  // The local agent takes every agent flag but those `up` sets itself.
  const agentOnly = AGENT_FLAGS.filter((f) => !['gateway', 'token', 'log-level'].includes(f));
  onlyFlags(args.flags, [...GATEWAY_FLAGS, ...agentOnly]);
  const say = (line: string) => process.stderr.write(`corral: ${line}\n`);
  const signals = new StopSignals(say);
  const gwFlags = Object.fromEntries(Object.entries(args.flags).filter(([k]) => GATEWAY_FLAGS.includes(k)));
  const config = loadGatewayConfig(gwFlags);
  ensurePrivateDataDir(config.dataDir);
  // Before anything is built or started: a second `up` on this directory must change nothing.
  const lock = await lockDataDir(config.dataDir);
  const agentOwn = Object.fromEntries(Object.entries(args.flags).filter(([k]) => !GATEWAY_FLAGS.includes(k)));
  const host = loadAgentConfig({ ...agentOwn, gateway: 'ws://unused', token: 'unused' });
  if (!(await listImages(host)).includes('busybox')) {
    process.stderr.write('building the busybox image (offline, once)…\n');
    await buildBusybox(host);
  }
  const gateway = await startGateway(config);
  printFirstStart(gateway);
  const s = gateway.services;
  const sign = (o: { sub: string; tenant?: string; scopes: Parameters<typeof mintToken>[0]['scopes'] }) =>
    mintToken({ secret: s.secret, issuer: config.jwtIssuer, audience: config.jwtAudience, ttlSeconds: TOKEN_TTL, ...o });
  const tokenFile = join(config.dataDir, 'default.token');
  if (!s.tenants.exists('default')) await s.tenants.create('default');
  if (!existsSync(tokenFile)) {
    writePrivateFile(tokenFile, (await sign({ sub: 'default-cli', tenant: 'default', scopes: ['jobs:read', 'jobs:write', 'functions:read', 'functions:write'] })) + '\n');
  }
  const agentFlags = Object.entries(agentOwn)
    .filter(([k]) => k !== 'name')
    .flatMap(([k, v]) => [`--${k}`, String(v)]);
  const port = (gateway.server.address() as { port: number }).port;
  const name = typeof args.flags.name === 'string' ? args.flags.name : 'local';
  // The agent runs as a child process: it gets the second core instead of sharing the gateway's
  // event loop (measured in bench/invoke.ts), and it stops when this process goes away.
  const agentEnv = {
    ...process.env,
    CORRAL_GATEWAY: `ws://127.0.0.1:${port}`,
    CORRAL_AGENT_TOKEN: await sign({ sub: `agent:${name}`, scopes: ['agent'] }),
    CORRAL_LOG_LEVEL: config.logLevel,
    CORRAL_DRAIN_MS: String(config.drainMs),
  };
  // In a process group of its own (detached): a Ctrl-C in the terminal reaches this process only,
  // which tells the agent how far to stop over the IPC channel (childOf). Were the agent in the
  // terminal's group, the signal would also hit the host tools it runs.
  const forkAgent = () => childOf(fork(process.argv[1]!, ['agent', '--name', name, ...agentFlags], { env: agentEnv, stdio: 'inherit', detached: true }));
  const first = forkAgent();
  // Once up, a dying agent is restarted while the gateway keeps serving: a job that crashes its
  // agent must not take every tenant's service down. The new agent destroys the old one's
  // containers at start; the attempts it held are re-run when their leases expire.
  const agent = new Supervisor({ name: 'the local agent', spawn: forkAgent, log: say });
  let supervising = false;
  const child = () => agent.child ?? first;
  // Graceful: the gateway refuses new work first, the agent finishes its running attempts and
  // reports them to the still-open gateway, destroys its containers, then the gateway closes.
  // A second signal ends the agent's drain (it still destroys every container); a third exits.
  signals.arm({
    async stop() {
      gateway.refuseNewWork();
      if (supervising) await agent.stop();
      else {
        first.stop(1);
        await first.exited;
      }
      await gateway.close();
      lock.release();
    },
    hurry: () => child().stop(2),
    async abandon() {
      const c = child();
      c.stop(3);
      // The agent names what it leaves before it exits, which is at once.
      await Promise.race([c.exited, new Promise((r) => setTimeout(r, 2000))]);
      return 'the gateway did not close its database (it recovers at the next start)';
    },
  });

  const connected = new Promise<void>((resolve) => {
    const check = () => (s.hub.agents().some((a) => a.id === name) ? resolve() : setTimeout(check, 20));
    check();
  });
  const firstStart = await Promise.race([connected.then(() => 'ok' as const), first.exited]);
  // A signal while the agent came up: the stop above has it from here.
  if (signals.stopping) return;
  // An agent that cannot come up the first time is a setup problem: say so instead of retrying.
  if (firstStart !== 'ok') {
    await gateway.close();
    throw new Error('the local agent could not start (see its log above)');
  }
  agent.start(first);
  supervising = true;
  const images = s.hub.agents().find((a) => a.id === name)!.images;
  const url = `http://${config.host}:${port}`;
  process.stderr.write(
    [
      '',
      `corral is up at ${url} with a local agent and ${images.join(', ') || 'no'} image(s).`,
      '',
      'Run a first job (in another terminal, from this directory):',
      `  npm run -s corral -- run -- echo hello from a container`,
      'or with curl:',
      `  curl -s -H "authorization: Bearer $(cat ${tokenFile})" -H 'content-type: application/json' \\`,
      `       -d '{"command":"echo hello; uname -a"}' '${url}/v1/jobs?wait=30'`,
      `Console: ${url}/ (sign in with the token in ${tokenFile})`,
      `API reference: ${url}/docs`,
      '',
    ].join('\n'),
  );
}
