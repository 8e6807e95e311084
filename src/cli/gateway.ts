import { GATEWAY_FLAGS, loadGatewayConfig } from '../config.js';
import { startGateway, type Gateway } from '../gateway.js';
import { ensurePrivateDataDir, lockDataDir } from '../datadir.js';
import { type Args, onlyFlags } from './args.js';
import { StopSignals } from './supervise.js';

export const GATEWAY_HELP = `corral gateway [--port 8080] [--host 127.0.0.1] [--data ./.corral] [--jwks FILE|URL] ...

Runs the HTTP API, the agent hub and the scheduler. Agents dial ws://HOST:PORT/v1/agents/connect.
Every flag has an environment variable (flags win): CORRAL_PORT, CORRAL_HOST, CORRAL_DATA,
CORRAL_JWT_SECRET, CORRAL_JWT_ISSUER, CORRAL_JWT_AUDIENCE, CORRAL_JWKS, CORRAL_SYNC, ...

SIGTERM or SIGINT stops it gracefully: new submits, invokes and trigger fires are answered 503
with Retry-After, reads are still served, and running attempts get up to --drain-ms (default
30000, CORRAL_DRAIN_MS) to finish and report before it exits (0). A second signal ends the drain
and closes the database (exit 1); a third exits at once.

One gateway per data directory: another corral gateway or corral up on the same --data refuses
to start (exit 2) while this one runs.`;

/** Prints how to get going after the first start. */
export function printFirstStart(g: Gateway): void {
  if (!g.adminToken) return;
  const data = g.services.config.dataDir;
  process.stderr.write(
    `\nFirst start: admin token written to ${data}/admin.token (mode 0600):\n\n  ${g.adminToken}\n\n`,
  );
}

export async function gatewayCommand(args: Args): Promise<void> {
  onlyFlags(args.flags, GATEWAY_FLAGS);
  const signals = new StopSignals((line) => process.stderr.write(`corral: ${line}\n`));
  const config = loadGatewayConfig(args.flags);
  ensurePrivateDataDir(config.dataDir);
  const lock = await lockDataDir(config.dataDir);
  const g = await startGateway(config);
  printFirstStart(g);
  // SIGTERM drains (new work gets 503, running attempts finish up to --drain-ms); a second
  // signal ends the drain and closes the database; a third exits at once.
  signals.arm({
    async stop() {
      await Promise.race([g.drain(), signals.hurried]);
      await g.close();
      lock.release();
    },
    abandon: () => `${runningAttempts(g)} attempt(s) still running are re-run after the next start`,
  });
}

/** Attempts the gateway's agents hold now. */
const runningAttempts = (g: Gateway) => g.services.hub.agents().reduce((n, a) => n + a.running.size, 0);
