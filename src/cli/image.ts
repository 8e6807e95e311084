import { buildBusybox, buildDebian, importImage, listImages, removeImage } from '../../agent/lxc/images.js';
import { loadAgentConfig } from '../../agent/config.js';
import { type Args, UsageError, onlyFlags } from './args.js';

export const IMAGE_HELP = `corral image build busybox [--name N]   offline, from LXC's busybox template
corral image build debian [--name N]    debootstrap (minbase, bookworm) from this machine's Debian mirror
corral image import NAME ROOTFS.tar     a root filesystem tarball
corral image ls                         images on this node
corral image rm NAME

Images are LXC base containers (corral-img-NAME under --lxc-path, default /var/lib/lxc) owned by the
unprivileged id range; job containers are overlay snapshots of them.`;

export async function imageCommand(args: Args): Promise<void> {
  onlyFlags(args.flags, ['name', 'lxc-path', 'idmap-base']);
  // Image commands need only the host settings; the gateway and token are not used.
  const c = loadAgentConfig({ gateway: 'ws://unused', token: 'unused', ...args.flags });
  const [verb, a, b] = args.positional;
  const name = typeof args.flags.name === 'string' ? args.flags.name : undefined;
  switch (verb) {
    case 'ls':
      for (const i of await listImages(c)) process.stdout.write(i + '\n');
      return;
    case 'build':
      if (a === 'busybox') await buildBusybox(c, name ?? 'busybox');
      else if (a === 'debian') await buildDebian(c, name ?? 'debian');
      else throw new UsageError('corral image build busybox|debian');
      process.stdout.write(`image ${name ?? a} built\n`);
      return;
    case 'import':
      if (!a || !b) throw new UsageError('corral image import NAME ROOTFS.tar');
      await importImage(c, a, b);
      process.stdout.write(`image ${a} imported\n`);
      return;
    case 'rm':
      if (!a) throw new UsageError('corral image rm NAME');
      await removeImage(c, a);
      return;
    default:
      throw new UsageError(IMAGE_HELP);
  }
}
