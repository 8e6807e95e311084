#!/usr/bin/env node
import { ConfigError } from '../config.js';
import { parseArgs, UsageError, type Args } from './args.js';
import { GATEWAY_HELP, gatewayCommand } from './gateway.js';
import { TOKEN_HELP, tokenCommand } from './token.js';
import { AGENT_HELP, agentCommand } from './agent.js';
import { IMAGE_HELP, imageCommand } from './image.js';
import { RUN_HELP, runCommand } from './run.js';
import { FN_HELP, fnCommand } from './fn.js';
import { TRIGGER_HELP, triggerCommand } from './trigger.js';
import { USAGE_HELP, usageCommand } from './usage.js';
import { UP_HELP, upCommand } from './up.js';

const HELP = `corral — run commands in pre-warmed, unprivileged LXC containers

Usage:
  corral up [flags]                     gateway + a local agent with a warm pool (all-in-one)
  corral gateway [flags]                the HTTP API, agent hub and scheduler
  corral agent --gateway ws://H:P --token T [--slots N]
                                        a worker node's daemon
  corral token --tenant T --scope "jobs:read jobs:write" [--ttl 30d]
                                        mint a token
  corral run [--image I --timeout S --retries N --cpu C --memory M] -- CMD...
                                        submit a job, stream its output, exit with its code
  corral fn deploy NAME [--image I --timeout S --memory M --env K=V ...] -- CMD...
  corral fn invoke NAME [--wait N] < input | ls | get NAME | rm NAME
                                        save functions and call them (stdin in, stdout out)
  corral trigger add FN [--kind github] | ls FN | rm FN ID | rotate FN ID
                                        webhook URLs that run a function (secret shown once)
  corral usage [--json] [--days N] [--tenant ID|all]
                                        usage today and the last days, CPU budget left
  corral image build busybox|debian | import NAME ROOTFS.tar | ls
                                        manage images on this node

Run "corral COMMAND --help" for a command's flags.`;

interface Command {
  help: string;
  /** Resolves with an exit code to exit now, or nothing for a daemon that keeps running. */
  run(args: Args): Promise<number | void>;
}

const commands: Record<string, Command> = {
  up: { help: UP_HELP, run: upCommand },
  gateway: { help: GATEWAY_HELP, run: gatewayCommand },
  agent: { help: AGENT_HELP, run: agentCommand },
  token: { help: TOKEN_HELP, run: async (a) => (await tokenCommand(a), 0) },
  run: { help: RUN_HELP, run: runCommand },
  fn: { help: FN_HELP, run: fnCommand },
  trigger: { help: TRIGGER_HELP, run: triggerCommand },
  usage: { help: USAGE_HELP, run: usageCommand },
  image: { help: IMAGE_HELP, run: async (a) => (await imageCommand(a), 0) },
};

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`corral: unknown command "${name}"\n\n${HELP}\n`);
    return 2;
  }
  const args = parseArgs(rest, new Set(['help', 'fresh', 'follow', 'no-wait', 'json']));
  if (args.flags.help) {
    process.stdout.write(command.help + '\n');
    return 0;
  }
  const code = await command.run(args);
  return code ?? -1;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    if (err instanceof UsageError || err instanceof ConfigError) {
      process.stderr.write(`corral: ${err.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`corral: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
