import { GATEWAY_FLAGS, loadGatewayConfig } from '../config.js';
import { startGateway, type Gateway } from '../gateway.js';
import { type Args, onlyFlags } from './args.js';

export const GATEWAY_HELP = `corral gateway [--port 8080] [--host 127.0.0.1] [--data ./.corral] [--jwks FILE|URL] ...

Runs the HTTP API, the agent hub and the scheduler. Agents dial ws://HOST:PORT/v1/agents/connect.
Every flag has an environment variable (flags win): CORRAL_PORT, CORRAL_HOST, CORRAL_DATA,
CORRAL_JWT_SECRET, CORRAL_JWT_ISSUER, CORRAL_JWT_AUDIENCE, CORRAL_JWKS, CORRAL_SYNC, ...

SIGTERM or SIGINT stops it gracefully: new submits, invokes and trigger fires are answered 503
with Retry-After, reads are still served, and running attempts get up to --drain-ms (default
30000, CORRAL_DRAIN_MS) to finish and report before it exits. A second signal exits at once.`;

/** Prints how to get going after the first start. */
export function printFirstStart(g: Gateway): void {
  if (!g.adminToken) return;
  const data = g.services.config.dataDir;
  process.stderr.write(
    `\nFirst start: admin token written to ${data}/admin.token (mode 0600):\n\n  ${g.adminToken}\n\n`,
  );
}

/** Runs `stop` on the first signal and exits 0 when it is done (1 if it failed); a second signal exits 1 at once. */
export function stopOnSignals(stop: () => Promise<void>): void {
  let stopping = false;
  const onSignal = () => {
    if (stopping) process.exit(1);
    stopping = true;
    stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

export async function gatewayCommand(args: Args): Promise<void> {
  onlyFlags(args.flags, GATEWAY_FLAGS);
  const g = await startGateway(loadGatewayConfig(args.flags));
  printFirstStart(g);
  // SIGTERM drains (new work gets 503, running attempts finish up to --drain-ms); a second signal stops at once.
  stopOnSignals(async () => {
    await g.drain();
    await g.close();
  });
}
