import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { debianMirror, importImage, listImages, removeImage } from '../agent/lxc/images.js';
import { ensureBusybox, startCluster } from './helpers/cluster.js';
import { runCli } from './helpers/process.js';

const host = { lxcPath: '/var/lib/lxc', idmapBase: 1_000_000 };
const name = `imp-${process.pid}`;
const debian = `deb-${process.pid}`;

afterAll(async () => {
  await removeImage(host, name);
  await removeImage(host, debian);
});

describe('images', () => {
  it('corral image ls lists the busybox image', async () => {
    await ensureBusybox();
    const r = await runCli(['image', 'ls']);
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')).toContain('busybox');
  });

  it('imports a root filesystem tarball as an image owned by the unprivileged range', async () => {
    await ensureBusybox();
    const dir = mkdtempSync(join(tmpdir(), 'corral-rootfs-'));
    const tar = join(dir, 'rootfs.tar');
    // A root filesystem with host-root owners, as `docker export` would give.
    execFileSync('tar', ['-cf', tar, '--numeric-owner', '--owner=0', '--group=0', '-C', join(host.lxcPath, 'corral-img-busybox', 'rootfs'), '.']);
    const r = await runCli(['image', 'import', name, tar]);
    expect(r.code, r.stderr).toBe(0);
    expect(await listImages(host)).toContain(name);
    const owner = execFileSync('stat', ['-c', '%u', join(host.lxcPath, `corral-img-${name}`, 'rootfs', 'bin')]).toString().trim();
    expect(owner).toBe('1000000');
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a bad image name and a tarball that is not a root filesystem', async () => {
    expect((await runCli(['image', 'import', '../evil', '/dev/null'])).code).not.toBe(0);
    const dir = mkdtempSync(join(tmpdir(), 'corral-notroot-'));
    execFileSync('tar', ['-cf', join(dir, 'x.tar'), '-C', dir, '--files-from', '/dev/null']);
    const r = await runCli(['image', 'import', `${name}-x`, join(dir, 'x.tar')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/no \/bin\/sh/);
    rmSync(dir, { recursive: true, force: true });
    expect(await listImages(host)).not.toContain(`${name}-x`);
  });

  it('finds the Debian mirror this machine uses', () => {
    expect(debianMirror()).toMatch(/^https?:\/\//);
  });

  it('builds a Debian image with debootstrap from that mirror, and jobs run in it', { timeout: 900_000 }, async () => {
    const built = await runCli(['image', 'build', 'debian', '--name', debian]);
    expect(built.code, built.stderr).toBe(0);
    expect(await listImages(host)).toContain(debian);
    const cluster = await startCluster({ agents: [] });
    try {
      await cluster.addAgent('deb1', { images: `busybox,${debian}` });
      const t = await cluster.tenant('debs');
      const r = await t.submit({ command: 'cat /etc/debian_version; command -v apt-get', image: debian }, 60);
      expect(r.job).toMatchObject({ state: 'succeeded', image: debian });
      expect(await t.output(r.job.id)).toMatch(/^12\.\d+\n\/usr\/bin\/apt-get\n$/);
    } finally {
      await cluster.stop();
    }
  });
});
