import { GATEWAY_FLAGS, loadGatewayConfig } from '../config.js';
import { startGateway, type Gateway } from '../gateway.js';
import { type Args, onlyFlags } from './args.js';

export const GATEWAY_HELP = `corral gateway [--port 8080] [--host 127.0.0.1] [--data ./.corral] [--jwks FILE|URL] ...

Runs the HTTP API, the agent hub and the scheduler. Agents dial ws://HOST:PORT/v1/agents/connect.
Every flag has an environment variable (flags win): CORRAL_PORT, CORRAL_HOST, CORRAL_DATA,
CORRAL_JWT_SECRET, CORRAL_JWT_ISSUER, CORRAL_JWT_AUDIENCE, CORRAL_JWKS, CORRAL_SYNC, ...`;

/** Prints how to get going after the first start. */
export function printFirstStart(g: Gateway): void {
  if (!g.adminToken) return;
  const data = g.services.config.dataDir;
  process.stderr.write(
    `\nFirst start: admin token written to ${data}/admin.token (mode 0600):\n\n  ${g.adminToken}\n\n`,
  );
}

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
  stopOnSignals(() => g.close());
}
