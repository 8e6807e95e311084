import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/paths.js';
import { execTool } from '../lxc/lxc.js';

/**
 * Compiles the resident executor (agent/executor/corral-exec.c) into a static binary under
 * `stateDir/bin`, once per source version. Static, because it runs inside images that may have
 * no C library at all.
 */
export async function ensureExecutor(stateDir: string): Promise<string> {
  const source = join(packageRoot(), 'agent', 'executor', 'corral-exec.c');
  const hash = createHash('sha256').update(readFileSync(source)).digest('hex');
  const bin = join(stateDir, 'bin');
  const out = join(bin, 'corral-exec');
  const stamp = `${out}.sha256`;
  if (existsSync(out) && existsSync(stamp) && readFileSync(stamp, 'utf8') === hash) return out;
  mkdirSync(bin, { recursive: true, mode: 0o755 });
  const tmp = `${out}.${process.pid}.tmp`;
  await execTool('gcc', ['-static', '-O2', '-Wall', '-o', tmp, source], 120_000);
  renameSync(tmp, out);
  writeFileSync(stamp, hash);
  return out;
}
