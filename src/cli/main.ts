#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { parseArgs, UsageError, type Args } from './args.js';

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
  corral jobs ls [--state S --name N --function F --limit N --cursor C] | get ID|NAME
                                        list jobs, show one and its attempts
  corral logs ID|NAME [-f] [--stream stdout|stderr]
                                        a job's output; -f follows it and exits with its code
  corral cancel ID|NAME | rm ID|NAME    cancel a job; delete a job and its output
  corral fn deploy NAME [--image I --timeout S --memory M --env K=V ...] -- CMD...
  corral fn invoke NAME [--wait N] < input | ls | get NAME | rm NAME
                                        save functions and call them (stdin in, stdout out)
  corral trigger add FN [--kind github] | ls FN | rm FN ID | rotate FN ID
                                        webhook URLs that run a function (secret shown once)
  corral usage [--days N] [--tenant ID|all]
                                        usage today and the last days, CPU budget left
  corral image build busybox|debian | import NAME ROOTFS.tar | ls
                                        manage images on this node
  corral backup FILE                    a consistent copy of the database while serving
  corral --version

Read commands (jobs ls/get, fn ls/get, trigger ls, usage) print aligned tables; --json prints the
gateway's JSON instead.

Where client commands find the gateway and their token:
  URL    --url, else CORRAL_URL, else http://127.0.0.1:$CORRAL_PORT (default port 8080)
  token  --token, else CORRAL_TOKEN, else the file default.token in --data, else in $CORRAL_DATA,
         else in ./.corral (corral up writes it there)

Exit codes:
  0      done (for run, fn invoke and logs -f: the job succeeded)
  1-123  run, fn invoke, logs -f: the job's own exit code; 1 also for an unexpected local error
  2      usage error: an unknown command or flag, a bad value or setting
  124    run, fn invoke, logs -f: the job timed out
  125    the gateway could not be reached or refused (bad token, not found, over quota, 503
         while it shuts down, ...), or the job ended with neither an exit code nor a signal
         (e.g. cancelled before it ran)
  128+N  run, fn invoke, logs -f: a signal N ended the job

Run "corral COMMAND --help" for a command's flags.`;

interface Command {
  help: string;
  /** Resolves with an exit code to exit now, or nothing for a daemon that keeps running. */
  run(args: Args): Promise<number | void>;
}

// Each command's module is loaded only when it runs: a client command does not pay for loading
// the gateway, the agent and their dependencies.
const commands: Record<string, () => Promise<Command>> = {
  up: async () => import('./up.js').then((m) => ({ help: m.UP_HELP, run: m.upCommand })),
  gateway: async () => import('./gateway.js').then((m) => ({ help: m.GATEWAY_HELP, run: m.gatewayCommand })),
  agent: async () => import('./agent.js').then((m) => ({ help: m.AGENT_HELP, run: m.agentCommand })),
  token: async () => import('./token.js').then((m) => ({ help: m.TOKEN_HELP, run: async (a: Args) => (await m.tokenCommand(a), 0) })),
  run: async () => import('./run.js').then((m) => ({ help: m.RUN_HELP, run: (a: Args) => m.runCommand(a) })),
  jobs: async () => import('./jobs.js').then((m) => ({ help: m.JOBS_HELP, run: (a: Args) => m.jobsCommand(a) })),
  logs: async () => import('./logs.js').then((m) => ({ help: m.LOGS_HELP, run: (a: Args) => m.logsCommand(a) })),
  cancel: async () => import('./cancel.js').then((m) => ({ help: m.CANCEL_HELP, run: (a: Args) => m.cancelCommand(a) })),
  rm: async () => import('./rm.js').then((m) => ({ help: m.RM_HELP, run: (a: Args) => m.rmCommand(a) })),
  fn: async () => import('./fn.js').then((m) => ({ help: m.FN_HELP, run: (a: Args) => m.fnCommand(a) })),
  trigger: async () => import('./trigger.js').then((m) => ({ help: m.TRIGGER_HELP, run: (a: Args) => m.triggerCommand(a) })),
  usage: async () => import('./usage.js').then((m) => ({ help: m.USAGE_HELP, run: (a: Args) => m.usageCommand(a) })),
  image: async () => import('./image.js').then((m) => ({ help: m.IMAGE_HELP, run: async (a: Args) => (await m.imageCommand(a), 0) })),
  backup: async () => import('./backup.js').then((m) => ({ help: m.BACKUP_HELP, run: (a: Args) => m.backupCommand(a) })),
};

/** The package's version: dist/src/cli/main.js sits three levels below package.json. */
function version(): string {
  return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  if (name === '--version' || name === '-V' || name === 'version') {
    process.stdout.write(`corral ${version()}\n`);
    return 0;
  }
  const load = commands[name];
  if (!load) {
    process.stderr.write(`corral: unknown command "${name}"\n\n${HELP}\n`);
    return 2;
  }
  const command = await load();
  const args = parseArgs(rest, new Set(['help', 'fresh', 'follow', 'no-wait', 'json']));
  if (args.flags.help) {
    process.stdout.write(command.help + '\n');
    return 0;
  }
  const code = await command.run(args);
  return code ?? -1;
}

/** fetch's "fetch failed" with the reason underneath (ECONNREFUSED, ENOTFOUND, ...). */
function unreachable(err: unknown): string | undefined {
  if (!(err instanceof TypeError) || err.message !== 'fetch failed') return undefined;
  const cause = err.cause as { code?: string; message?: string } | undefined;
  return cause?.code ?? cause?.message ?? 'fetch failed';
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    // ConfigError is told by its name: importing config.ts (and zod) here would slow every command.
    if (err instanceof UsageError || (err instanceof Error && err.name === 'ConfigError')) {
      process.stderr.write(`corral: ${err.message}\n`);
      process.exit(2);
    }
    const why = unreachable(err);
    if (why) {
      process.stderr.write(`corral: cannot reach the gateway (${why}); is it running? (--url, CORRAL_URL)\n`);
      process.exit(125);
    }
    process.stderr.write(`corral: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
