import { randomBytes } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
let lastTime = -1;
let lastRandom: Buffer = Buffer.alloc(10);

function encode(time: number, random: Buffer): string {
  let out = '';
  for (let i = 9; i >= 0; i--) {
    out = ALPHABET[time % 32]! + out;
    time = Math.floor(time / 32);
  }
  // 80 random bits → 16 characters, 5 bits each.
  let bits = 0;
  let value = 0;
  for (const byte of random) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31]!;
      bits -= 5;
    }
  }
  return out;
}

function increment(buf: Buffer): Buffer {
  const next = Buffer.from(buf);
  for (let i = next.length - 1; i >= 0; i--) {
    if (next[i]! < 255) {
      next[i]!++;
      return next;
    }
    next[i] = 0;
  }
  return next;
}

/**
 * A ULID that sorts by creation time and, within one millisecond, by call order — so job ids
 * double as the list cursor.
 */
export function ulid(now = Date.now()): string {
  if (now <= lastTime) {
    lastRandom = increment(lastRandom);
    return encode(lastTime, lastRandom);
  }
  lastTime = now;
  lastRandom = randomBytes(10);
  return encode(now, lastRandom);
}

export const newJobId = (now?: number) => `job_${ulid(now)}`;
