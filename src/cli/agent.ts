import { AGENT_FLAGS, loadAgentConfig } from '../../agent/config.js';
import { startAgent } from '../../agent/agent.js';
import { type Args, onlyFlags } from './args.js';
import { stopOnSignals } from './gateway.js';

export const AGENT_HELP = `corral agent --gateway ws://HOST:PORT --token TOKEN [--name N] [--slots N] [--warm N]
             [--max-uses N] [--idle-ttl SECONDS] [--disk BYTES] [--pids N] [--images a,b]

Runs a worker node's daemon (as root, with LXC). It dials the gateway, offers this node's images
and runs attempts in a pool of pre-warmed, unprivileged containers. Mint its token with
"corral token --scope agent". Environment: CORRAL_GATEWAY, CORRAL_AGENT_TOKEN, CORRAL_SLOTS, ...`;

export async function agentCommand(args: Args): Promise<void> {
  onlyFlags(args.flags, AGENT_FLAGS);
  const agent = await startAgent(loadAgentConfig(args.flags));
  stopOnSignals(() => agent.stop());
  // Started by `corral up`: stop with the parent, even if it was killed.
  if (process.send) process.once('disconnect', () => void agent.stop().then(() => process.exit(0)));
}
