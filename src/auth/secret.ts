import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensurePrivateDataDir, writePrivateFile } from '../datadir.js';

/**
 * The HS256 secret: the configured one, else the one generated into the data directory on
 * first start (0600), so that tokens survive restarts.
 */
export function loadOrCreateSecret(dataDir: string, configured?: string): Uint8Array {
  if (configured) return new TextEncoder().encode(configured);
  const file = join(dataDir, 'jwt.secret');
  if (!existsSync(file)) {
    ensurePrivateDataDir(dataDir);
    writePrivateFile(file, randomBytes(48).toString('base64url'));
  }
  return new TextEncoder().encode(readFileSync(file, 'utf8').trim());
}
