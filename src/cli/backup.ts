import { chmodSync, existsSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { type Args, UsageError, onlyFlags, str } from './args.js';

export const BACKUP_HELP = `corral backup FILE [--data ./.corral]

Copies $CORRAL_DATA/corral.db into FILE while the gateway keeps serving (SQLite's VACUUM INTO:
one consistent snapshot; every job acknowledged before the backup started is in it). FILE is
written with mode 0600 and is never overwritten: name a new file. Run it on the gateway's machine
as the user the gateway runs as. Keep $CORRAL_DATA/jwt.secret and $CORRAL_DATA/secrets.key with
the backup: without the first no issued token verifies, without the second no trigger or
callback secret in the database can be decrypted. To restore, stop the gateway and copy FILE
to $CORRAL_DATA/corral.db (mode 0600).`;

/** How long the backup waits for a lock held by the gateway (a checkpoint), ms. */
const BUSY_TIMEOUT_MS = 10_000;

export async function backupCommand(args: Args, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  onlyFlags(args.flags, ['data']);
  if (args.positional.length !== 1) throw new UsageError(`corral backup FILE: ${args.positional.length ? `one file, got ${args.positional.join(' ')}` : 'where to? name a new file'}`);
  const file = resolve(args.positional[0]!);
  const source = join(str(args.flags, 'data') ?? env.CORRAL_DATA ?? './.corral', 'corral.db');
  if (!existsSync(source)) throw new UsageError(`no database at ${source}: pass --data or set CORRAL_DATA to the gateway's data directory`);
  if (existsSync(file)) throw new UsageError(`${file} exists; corral backup does not overwrite, name a new file`);

  // A read-only connection: the backup cannot change the live database. In WAL mode it reads
  // one snapshot while the gateway goes on writing.
  const db = new Database(source, { readonly: true, fileMustExist: true });
  // The copy is created under this umask, so it is never readable by others, not even briefly.
  const umask = process.umask(0o077);
  try {
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    // VACUUM INTO refuses an existing file itself, so a file created since the check above is safe too.
    db.prepare('VACUUM INTO ?').run(file);
  } catch (err) {
    if (existsSync(file) && !(err instanceof Error && /already exists/.test(err.message))) rmSync(file, { force: true });
    throw err;
  } finally {
    process.umask(umask);
    db.close();
  }
  chmodSync(file, 0o600);

  const copy = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const check = copy.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new Error(`the copy in ${file} failed its check: ${String(check)}`);
    const jobs = copy.prepare('SELECT count(*) FROM jobs').pluck().get() as number;
    process.stdout.write(`backed up ${source} to ${file} (${statSync(file).size} bytes, ${jobs} jobs)\n`);
  } finally {
    copy.close();
  }
  process.stderr.write('corral: keep jwt.secret and secrets.key from the data directory with it (secrets.key decrypts trigger and callback secrets)\n');
  return 0;
}
