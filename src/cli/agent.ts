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
  stopOnSignals(drainThenStop);
  // Started by `corral up` (in a process group of its own, so a Ctrl-C reaches only the parent,
  // which drains it with SIGTERM). The parent went away (killed, or a second Ctrl-C): nobody is
  // left to report to, stop now.
  if (process.send) process.once('disconnect', () => void agent.stop().then(() => process.exit(0)));
}
