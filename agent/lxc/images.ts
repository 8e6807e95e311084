import { chmodSync, existsSync, lstatSync, lchownSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execTool, IMAGE_PREFIX, lxcLs } from './lxc.js';

export const IMAGE_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export interface ImageHost {
  lxcPath: string;
  idmapBase: number;
}

const rootfsOf = (h: ImageHost, name: string) => join(h.lxcPath, IMAGE_PREFIX + name, 'rootfs');

/** Images on this node: LXC base containers named corral-img-NAME with a root filesystem. */
export async function listImages(h: ImageHost): Promise<string[]> {
  if (!existsSync(h.lxcPath)) return [];
  const names = await lxcLs(h.lxcPath).catch(() => readdirSync(h.lxcPath));
  return names
    .filter((n) => n.startsWith(IMAGE_PREFIX) && existsSync(join(h.lxcPath, n, 'rootfs', 'bin')))
    .map((n) => n.slice(IMAGE_PREFIX.length))
    .sort();
}

function checkName(name: string): void {
  if (!IMAGE_NAME.test(name)) throw new Error(`image name "${name}" must be lowercase letters, digits, ".", "_" or "-"`);
}

/** Shifts a root filesystem's owners by the idmap base, so root inside owns it and no host user does. */
function shiftOwners(dir: string, base: number): void {
  const walk = (p: string) => {
    const st = lstatSync(p);
    if (st.uid < base) lchownSync(p, st.uid + base, st.gid + base);
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
  };
  walk(dir);
}

/**
 * Opens an image's folders to every tenant's id range for reading (its files stay owned by the
 * images' range, so no tenant's root can write them): containers of each tenant map onto their
 * own host range and must traverse the image to mount it as their lower layer.
 */
export function shareImage(h: ImageHost, name: string): void {
  const dir = join(h.lxcPath, IMAGE_PREFIX + name);
  chmodSync(dir, 0o755);
  chmodSync(join(dir, 'rootfs'), 0o755);
}

/** Writes the image's own LXC config (it is never started; job containers are snapshots of it). */
function writeImageConfig(h: ImageHost, name: string): void {
  const dir = join(h.lxcPath, IMAGE_PREFIX + name);
  writeFileSync(
    join(dir, 'config'),
    [`lxc.uts.name = ${IMAGE_PREFIX}${name}`, `lxc.rootfs.path = dir:${join(dir, 'rootfs')}`, `lxc.idmap = u 0 ${h.idmapBase} 65536`, `lxc.idmap = g 0 ${h.idmapBase} 65536`, 'lxc.net.0.type = empty', ''].join('\n'),
  );
  shareImage(h, name);
}

/** busybox, offline, from LXC's busybox template and the host's static busybox. */
export async function buildBusybox(h: ImageHost, name = 'busybox'): Promise<void> {
  checkName(name);
  const conf = join(h.lxcPath, `.${name}.create.conf`);
  mkdirSync(h.lxcPath, { recursive: true });
  writeFileSync(conf, `lxc.idmap = u 0 ${h.idmapBase} 65536\nlxc.idmap = g 0 ${h.idmapBase} 65536\nlxc.net.0.type = empty\n`);
  try {
    await execTool('lxc-create', ['-P', h.lxcPath, '-t', 'busybox', '-n', IMAGE_PREFIX + name, '-f', conf], 300_000);
  } finally {
    rmSync(conf, { force: true });
  }
  writeImageConfig(h, name);
}

/** The Debian mirror this machine's apt uses. */
export function debianMirror(): string {
  const files = ['/etc/apt/sources.list', ...(existsSync('/etc/apt/sources.list.d') ? readdirSync('/etc/apt/sources.list.d').map((f) => join('/etc/apt/sources.list.d', f)) : [])];
  for (const f of files) {
    if (!existsSync(f)) continue;
    const text = readFileSync(f, 'utf8');
    const deb822 = /^URIs:\s*(\S+)/m.exec(text);
    if (deb822 && !/security/.test(deb822[1]!)) return deb822[1]!;
    const line = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+/m.exec(text);
    if (line && !/security/.test(line[1]!)) return line[1]!;
  }
  return 'http://deb.debian.org/debian';
}

/**
 * Fills a root filesystem in a hidden staging folder and moves it into place only when it is
 * complete, so an agent listing images never sees (and never runs jobs on) a half-built one.
 */
async function stageImage(h: ImageHost, name: string, fill: (rootfs: string) => Promise<void>): Promise<void> {
  checkName(name);
  const dir = join(h.lxcPath, IMAGE_PREFIX + name);
  if (existsSync(dir)) throw new Error(`image ${name} already exists`);
  const staging = join(h.lxcPath, `.staging-${name}-${process.pid}`);
  mkdirSync(join(staging, 'rootfs'), { recursive: true, mode: 0o755 });
  try {
    await fill(join(staging, 'rootfs'));
    if (!existsSync(join(staging, 'rootfs', 'bin', 'sh'))) throw new Error('the result has no /bin/sh: is it a root filesystem?');
    shiftOwners(join(staging, 'rootfs'), h.idmapBase);
    renameSync(staging, dir);
    writeImageConfig(h, name);
  } catch (err) {
    rmSync(staging, { recursive: true, force: true });
    throw err;
  }
}

/** debian (bookworm, minbase) by debootstrap from the machine's configured mirror. */
export function buildDebian(h: ImageHost, name = 'debian', suite = 'bookworm'): Promise<void> {
  return stageImage(h, name, async (rootfs) => {
    await execTool('debootstrap', ['--variant=minbase', suite, rootfs, debianMirror()], 1_800_000);
  });
}

/** An image from a root filesystem tarball (as `docker export` or `tar -C rootfs -c .` make). */
export function importImage(h: ImageHost, name: string, tarball: string): Promise<void> {
  return stageImage(h, name, async (rootfs) => {
    await execTool('tar', ['-xpf', tarball, '-C', rootfs, '--numeric-owner'], 1_800_000);
  });
}

export async function removeImage(h: ImageHost, name: string): Promise<void> {
  checkName(name);
  rmSync(join(h.lxcPath, IMAGE_PREFIX + name), { recursive: true, force: true });
}
