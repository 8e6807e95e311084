import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ExecClient } from '../executor/client.js';
import { cgroupOfMonitor, type ContainerCgroup } from '../lxc/cgroup.js';
import { CONTAINER_PREFIX, containerConfig, execTool, lxcLs, ToolFailed } from '../lxc/lxc.js';
import { eachBounded } from './bounded.js';

export interface ContainerEnv {
  /** The agent's name: part of every container name, so an agent can find its own leftovers. */
  agent: string;
  lxcPath: string;
  executor: string;
  diskBytes: number;
  /** Images whose jobs run as root in their user namespace. */
  rootImages?: readonly string[];
}

/** World-writable directories of an image, made writable in each container's own layer. */
const SHARED_DIRS = ['tmp', 'var/tmp'];

export const containerPrefix = (agent: string) => `${CONTAINER_PREFIX}${agent.slice(0, 24)}-`;

/**
 * Destroys containers a previous run of this agent left behind (after a crash or kill -9):
 * nothing a past tenant ran may survive into the new pool.
 */
export async function destroyLeftovers(env: ContainerEnv): Promise<number> {
  const prefix = containerPrefix(env.agent);
  const names = (await lxcLs(env.lxcPath).catch(() => [] as string[])).filter((n) => n.startsWith(prefix));
  await eachBounded(names, 8, (name) => removeContainer(env, name));
  return names.length;
}

/**
 * Runs a teardown tool in its own process group, and again if a signal from outside ended it:
 * systemd's control-group kill reaches every process of the agent at once, the tools it is
 * cleaning up with included, and a teardown step cut short would leave a running container.
 * Only for steps that are safe to repeat (a second lxc-start or mount would not be).
 */
async function teardownTool(tool: string, args: string[], timeoutMs = 60_000): Promise<string> {
  for (let tries = 1; ; tries++) {
    try {
      return await execTool(tool, args, timeoutMs, { ownGroup: true });
    } catch (err) {
      if (!(err instanceof ToolFailed && err.signal) || tries === 3) throw err;
    }
  }
}

/** Stops a container, killing everything in it, and removes every trace of it. */
async function removeContainer(env: Pick<ContainerEnv, 'lxcPath'>, name: string): Promise<void> {
  await teardownTool('lxc-stop', ['-P', env.lxcPath, '-n', name, '-k'], 30_000).catch(() => undefined);
  await teardownTool('umount', ['-l', join(env.lxcPath, name, 'overlay')]).catch(() => undefined);
  rmSync(join(env.lxcPath, name), { recursive: true, force: true });
}

/**
 * One job container: an overlay snapshot of an image whose writable layer lives on a tmpfs of
 * `diskBytes` (the bound on what a job can write), started with the resident executor as init.
 */
export class Container {
  readonly name: string;
  /** Bound on first use; a warm container serves only this tenant. */
  tenant: string | undefined;
  uses = 0;
  lastUsed = Date.now();
  /** The executor's pid on the host (the container's init). */
  pid = 0;
  cgroup!: ContainerCgroup;
  /** The limits last written to the cgroup: an attempt with the same limits writes nothing. */
  applied: string | undefined;
  exec!: ExecClient;

  private constructor(
    readonly image: string,
    private readonly env: ContainerEnv,
    /** First host id of the range this container's ids map onto (its tenant's, or a spare). */
    readonly idBase: number,
  ) {
    this.name = `${containerPrefix(env.agent)}${randomBytes(6).toString('hex')}`;
  }

  private get dir() {
    return join(this.env.lxcPath, this.name);
  }
  /** The executor's socket directory: inside the size-capped tmpfs, so a job cannot fill the host through it. */
  private get sockDir() {
    return join(this.dir, 'overlay', 'run');
  }

  /** Creates and starts a container of `image` in the id range at `idBase`; resolves when its executor answers. */
  static async start(image: string, env: ContainerEnv, idBase: number): Promise<Container> {
    const c = new Container(image, env, idBase);
    try {
      await c.create();
      await execTool('lxc-start', ['-P', env.lxcPath, '-n', c.name, '-p', join(c.dir, 'init.pid'), '-l', 'WARN', '-o', join(c.dir, 'lxc.log')], 30_000, { ownGroup: true });
      c.cgroup = cgroupOfMonitor(Number(readFileSync(join(c.dir, 'init.pid'), 'utf8').trim()));
      c.pid = c.cgroup.procs()[0] ?? 0;
      // The executor is tiny; keep the OOM killer on the job, never on the container's init.
      try {
        writeFileSync(`/proc/${c.pid}/oom_score_adj`, '-1000');
      } catch {
        /* best effort */
      }
      c.exec = await ExecClient.connect(join(c.sockDir, 'exec.sock'), 10_000);
      return c;
    } catch (err) {
      await c.destroy();
      throw err;
    }
  }

  private async create(): Promise<void> {
    const id = this.idBase;
    const overlay = join(this.dir, 'overlay');
    // Like lxc-copy: the container's directory belongs to its root, who mounts the overlay inside it.
    mkdirSync(overlay, { recursive: true, mode: 0o770 });
    chownSync(this.dir, id, id);
    await execTool('mount', ['-t', 'tmpfs', '-o', `size=${this.env.diskBytes},mode=0755,uid=${id},gid=${id}`, `corral-${this.name}`, overlay], 60_000, { ownGroup: true });
    for (const [sub, mode] of [['delta', 0o755], ['run', 0o700]] as const) {
      mkdirSync(join(overlay, sub), { mode });
      chownSync(join(overlay, sub), id, id);
    }
    this.openSharedDirs(join(overlay, 'delta'));
    writeFileSync(
      join(this.dir, 'config'),
      containerConfig({
        name: this.name,
        lxcPath: this.env.lxcPath,
        imageRootfs: join(this.env.lxcPath, `corral-img-${this.image}`, 'rootfs'),
        upperDir: join(overlay, 'delta'),
        idBase: id,
        executor: this.env.executor,
        sockDir: this.sockDir,
        network: false,
        rootJobs: this.env.rootImages?.includes(this.image) ?? false,
      }),
    );
  }

  /**
   * The image's files belong to the images' id range, which this container does not map, and the
   * overlay cannot copy a directory up to an owner it cannot map: writing into the image's /tmp
   * would fail. So the world-writable directories a job (an unprivileged uid, which can write
   * nowhere else) needs are made in the writable layer up front, owned by this container's root.
   */
  private openSharedDirs(upper: string): void {
    const lower = join(this.env.lxcPath, `corral-img-${this.image}`, 'rootfs');
    for (const dir of SHARED_DIRS) {
      if (!existsSync(join(lower, dir))) continue;
      let path = upper;
      for (const part of dir.split('/')) {
        path = join(path, part);
        if (!existsSync(path)) {
          mkdirSync(path);
          chownSync(path, this.idBase, this.idBase);
          chmodSync(path, 0o755);
        }
      }
      chmodSync(path, 0o1777);
    }
  }

  /** Stops the container, killing everything in it, and removes every trace of it. */
  async destroy(): Promise<void> {
    this.exec?.close();
    this.cgroup?.close();
    await removeContainer(this.env, this.name);
  }
}
