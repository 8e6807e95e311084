/** `--key value`, `--key=value`, bare `--flag` (true); everything after `--` is kept as is. */
export interface Args {
  positional: string[];
  flags: Record<string, string | boolean>;
  /** Every value of each flag given more than once or not (`--env A=1 --env B=2`); `flags` keeps the last. */
  repeated: Record<string, string[]>;
  rest: string[];
}

export function parseArgs(argv: string[], booleans: ReadonlySet<string> = new Set()): Args {
  const out: Args = { positional: [], flags: {}, repeated: {}, rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      out.rest = argv.slice(i + 1);
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const key = eq === -1 ? a.slice(2) : a.slice(2, eq);
      if (eq !== -1) out.flags[key] = a.slice(eq + 1);
      else if (booleans.has(key) || i + 1 >= argv.length || argv[i + 1]!.startsWith('--')) out.flags[key] = true;
      else out.flags[key] = argv[++i]!;
      const value = out.flags[key]!;
      if (typeof value === 'string') (out.repeated[key] ??= []).push(value);
    } else if (a === '-h') out.flags.help = true;
    else if (a === '-f') out.flags.follow = true;
    else out.positional.push(a);
  }
  return out;
}

export class UsageError extends Error {
  override name = 'UsageError';
}

export function str(flags: Args['flags'], key: string): string | undefined {
  const v = flags[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new UsageError(`--${key} needs a value`);
  return v;
}

/** Rejects flags a command does not know, so a typo is an error and not a silent default. */
export function onlyFlags(flags: Args['flags'], allowed: readonly string[]): void {
  for (const k of Object.keys(flags)) {
    if (k !== 'help' && !allowed.includes(k)) throw new UsageError(`unknown flag --${k}`);
  }
}
