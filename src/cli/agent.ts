import { AGENT_FLAGS, loadAgentConfig } from '../../agent/config.js';
import { startAgent } from '../../agent/agent.js';
import { type Args, onlyFlags } from './args.js';
import { StopSignals, stopLevelOf } from './supervise.js';

export const AGENT_HELP = `corral agent --gateway ws://HOST:PORT --token TOKEN [--name N] [--slots N] [--warm N]
             [--max-uses N] [--idle-ttl SECONDS] [--disk BYTES] [--pids N] [--images a,b]

Runs a worker node's daemon (as root, with LXC). It dials the gateway, offers this node's images
and runs attempts in a pool of pre-warmed, unprivileged containers. Mint its token with
"corral token --scope agent". Environment: CORRAL_GATEWAY, CORRAL_AGENT_TOKEN, CORRAL_SLOTS, ...

SIGTERM or SIGINT drains it: it tells the gateway to send no more runs, lets running attempts
finish and report for up to --drain-ms (default 30000, CORRAL_DRAIN_MS), then destroys its
containers and exits 0. A second signal ends the drain (the attempts still running end with their
containers) and still destroys every container before it exits 1. A third exits at once and
names the containers it left; the next start of an agent of the same --name destroys them.`;

export async function agentCommand(args: Args): Promise<void> {
  onlyFlags(args.flags, AGENT_FLAGS);
  const signals = new StopSignals((line) => process.stderr.write(`corral agent: ${line}\n`));
  // Started by `corral up`: its parent tells it how far to stop over the IPC channel. A parent
  // that went away (killed, or forced out) leaves nobody to report to: stop without waiting.
  if (process.send) {
    process.on('message', (m) => {
      const level = stopLevelOf(m);
      if (level) signals.escalate(level);
    });
    process.once('disconnect', () => signals.escalate(2));
  }
  const config = loadAgentConfig(args.flags);
  const agent = await startAgent(config);
  // Refused for good (its token, its name or its protocol): dialling again would change nothing.
  agent.connection.once('refused', (err) => {
    process.stderr.write(`corral agent: ${err.message}\n`);
    void agent.stop().then(() => process.exit(2));
  });
  signals.arm({
    async stop() {
      await Promise.race([agent.drain(config.drainMs), signals.hurried]);
      await agent.stop();
    },
    abandon() {
      const left = agent.pool.remaining();
      if (left.containers.length + left.starting === 0) return 'no container is left';
      return (
        `left ${left.containers.length} container(s)${left.starting ? ` and ${left.starting} still starting` : ''} ` +
        `(${left.containers.join(', ')}); the next start of agent ${config.name} destroys them`
      );
    },
  });
}
