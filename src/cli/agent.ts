import { AGENT_FLAGS, loadAgentConfig } from '../../agent/config.js';
import { startAgent } from '../../agent/agent.js';
import { type Args, onlyFlags } from './args.js';
import { stopOnSignals } from './gateway.js';

export const AGENT_HELP = `corral agent --gateway ws://HOST:PORT --token TOKEN [--name N] [--slots N] [--warm N]
             [--max-uses N] [--idle-ttl SECONDS] [--disk BYTES] [--pids N] [--images a,b]

Runs a worker node's daemon (as root, with LXC). It dials the gateway, offers this node's images
and runs attempts in a pool of pre-warmed, unprivileged containers. Mint its token with
"corral token --scope agent". Environment: CORRAL_GATEWAY, CORRAL_AGENT_TOKEN, CORRAL_SLOTS, ...

SIGTERM or SIGINT drains it: it tells the gateway to send no more runs, lets running attempts
finish and report for up to --drain-ms (default 30000, CORRAL_DRAIN_MS), then destroys its
containers and exits. A second signal exits at once (the next start destroys what is left).`;

export async function agentCommand(args: Args): Promise<void> {
  onlyFlags(args.flags, AGENT_FLAGS);
  const config = loadAgentConfig(args.flags);
  const agent = await startAgent(config);
  const drainThenStop = async () => {
    await agent.drain(config.drainMs);
    await agent.stop();
  };
  if (!process.send) return stopOnSignals(drainThenStop);
  // Started by `corral up`, which decides when its agent stops (with SIGTERM, after the gateway
  // stopped taking work). A Ctrl-C reaches the whole process group: were it a first signal here,
  // the parent's SIGTERM would be the second and cut the drain short.
  process.on('SIGINT', () => {});
  stopOnSignals(drainThenStop, ['SIGTERM']);
  // The parent went away (killed, or a second Ctrl-C): nobody is left to report to, stop now.
  process.once('disconnect', () => void agent.stop().then(() => process.exit(0)));
}
