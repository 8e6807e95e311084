import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensurePrivateDataDir, writePrivateFile } from '../datadir.js';

const VERSION = 'v1';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * Seals secrets kept in the database (trigger and callback signing secrets) with AES-256-GCM
 * under a key that lives in the data directory (`secrets.key`, 0600), like `jwt.secret`: a copy
 * of the database alone does not hand the secrets out.
 *
 * Every sealed value is bound to a context (its row, e.g. `trigger:trg_…`), so a value copied
 * into another row does not open there.
 *
 * @example
 *   const box = SecretBox.load(dataDir);
 *   const sealed = box.seal('whsec_…', `trigger:${id}`);
 *   box.open(sealed, `trigger:${id}`) === 'whsec_…';
 */
export class SecretBox {
  private constructor(private readonly key: Buffer) {}

  /** The data directory's key, created on first use. */
  static load(dataDir: string): SecretBox {
    const file = join(dataDir, 'secrets.key');
    if (!existsSync(file)) {
      ensurePrivateDataDir(dataDir);
      writePrivateFile(file, randomBytes(32).toString('base64url'));
    }
    const key = Buffer.from(readFileSync(file, 'utf8').trim(), 'base64url');
    if (key.length !== 32) throw new Error(`${file} does not hold a 32-byte key`);
    return new SecretBox(key);
  }

  /** A box with a key of the caller's (tests, an in-memory gateway). */
  static withKey(key: Buffer): SecretBox {
    if (key.length !== 32) throw new Error('a secret box key has 32 bytes');
    return new SecretBox(key);
  }

  seal(plaintext: string, context: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(context));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return `${VERSION}:${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url')}`;
  }

  /** The plaintext; throws if the value was not sealed by this key for this context. */
  open(sealed: string, context: string): string {
    const [version, data] = sealed.split(':');
    if (version !== VERSION || !data) throw new Error('not a sealed secret');
    const raw = Buffer.from(data, 'base64url');
    if (raw.length < IV_BYTES + TAG_BYTES) throw new Error('not a sealed secret');
    const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, IV_BYTES));
    decipher.setAAD(Buffer.from(context));
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
  }
}
