import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { containerLimitsHook } from './host-limits.js';

/** A host tool that failed; `signal` is set when a signal from outside ended it (not our timeout). */
export class ToolFailed extends Error {
  constructor(
    message: string,
    readonly signal?: string,
  ) {
    super(message);
  }
}

/** Output a tool may print before it is cut off. */
const MAX_OUTPUT = 16 * 1024 * 1024;

/**
 * Runs a host tool such as lxc-start or mount (never through a shell); throws ToolFailed with its
 * stderr on failure. `ownGroup` starts it in a process group (and session) of its own, so that a
 * Ctrl-C meant for the agent does not also kill the lxc-stop or umount it is cleaning up with
 * (execFile drops `detached`, hence spawn).
 */
export function execTool(tool: string, args: string[], timeoutMs = 60_000, o: { ownGroup?: boolean } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(tool, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, detached: o.ownGroup ?? false });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    const take = (into: Buffer[]) => (d: Buffer) => {
      size += d.length;
      if (size > MAX_OUTPUT) p.kill('SIGKILL');
      else into.push(d);
    };
    p.stdout.on('data', take(out));
    p.stderr.on('data', take(err));
    const fail = (why: string, signal?: string) => reject(new ToolFailed(`${tool} ${args.join(' ')} failed: ${why.trim()}`, signal));
    p.on('error', (e) => fail(e.message));
    p.on('close', (code, signal) => {
      if (code === 0) return resolve(Buffer.concat(out).toString());
      const stderr = Buffer.concat(err).toString();
      // p.killed: our own timeout (or output cap) ended it; any other signal came from outside.
      fail(stderr || (signal ? `killed by ${signal}` : `exit code ${code}`), signal && !p.killed ? signal : undefined);
    });
  });
}

/** LXC's own denylist (kexec, module loading, open_by_handle_at, forced umount …). */
export const SECCOMP = '/usr/share/lxc/config/common.seccomp';

/**
 * Capabilities a container keeps (lxc.cap.keep; everything else leaves the bounding set). What
 * the executor needs to drop a job to its uid (setuid, setgid, setpcap) and to kill what a job
 * leaves (kill) is all a container of an ordinary image keeps; one whose jobs run as root (an
 * image that opts in) also keeps what package installs need. Never sys_admin, sys_ptrace,
 * net_admin, sys_module, mac_*, sys_time, sys_rawio.
 */
export const EXECUTOR_CAPS = ['kill', 'setgid', 'setuid', 'setpcap'];
export const ROOT_JOB_CAPS = [...EXECUTOR_CAPS, 'chown', 'dac_override', 'fowner', 'fsetid', 'net_bind_service', 'sys_chroot', 'mknod', 'audit_write', 'setfcap'];

/** Whether this host runs AppArmor (then containers get LXC's generated profile). */
export function hostHasAppArmor(): boolean {
  try {
    return readFileSync('/sys/module/apparmor/parameters/enabled', 'utf8').trim() === 'Y';
  } catch {
    return false;
  }
}

export const IMAGE_PREFIX = 'corral-img-';
export const CONTAINER_PREFIX = 'corral-run-';

/** Names of LXC containers under `lxcPath`. */
export async function lxcLs(lxcPath: string): Promise<string[]> {
  return (await execTool('lxc-ls', ['-P', lxcPath, '-1'], 60_000, { ownGroup: true })).split('\n').map((s) => s.trim()).filter(Boolean);
}

export interface ContainerConfig {
  name: string;
  lxcPath: string;
  imageRootfs: string;
  upperDir: string;
  /** First host id of the range the container's ids 0..65535 map onto (its tenant's). */
  idBase: number;
  executor: string;
  sockDir: string;
  network: boolean;
  /** Its jobs run as root in the user namespace (an image that opts in): it keeps ROOT_JOB_CAPS. */
  rootJobs: boolean;
}

/**
 * The LXC config of one job container: an overlay snapshot of the image, user-namespaced
 * (root inside is `idBase` outside), no network interface but lo, the resident executor as
 * init, and its socket directory bind-mounted from the host. Without LXC's seccomp profile no
 * container starts: a container never runs unfiltered.
 */
export function containerConfig(c: ContainerConfig): string {
  if (!existsSync(SECCOMP)) throw new Error(`${SECCOMP} is missing: refusing to start containers without a seccomp profile`);
  return [
    'lxc.uts.name = corral',
    `lxc.rootfs.path = overlay:${c.imageRootfs}:${c.upperDir}`,
    `lxc.idmap = u 0 ${c.idBase} 65536`,
    `lxc.idmap = g 0 ${c.idBase} 65536`,
    c.network ? 'lxc.net.0.type = veth\nlxc.net.0.link = lxcbr0\nlxc.net.0.flags = up' : 'lxc.net.0.type = empty',
    `lxc.apparmor.profile = ${hostHasAppArmor() ? 'generated' : 'unconfined'}`,
    'lxc.autodev = 1',
    'lxc.tty.max = 0',
    'lxc.pty.max = 16',
    'lxc.console.path = none',
    `lxc.cap.keep = ${(c.rootJobs ? ROOT_JOB_CAPS : EXECUTOR_CAPS).join(' ')}`,
    `lxc.seccomp.profile = ${SECCOMP}`,
    // The container's own per-user inotify/fanotify limits: see host-limits.ts.
    containerLimitsHook(),
    'lxc.mount.auto = proc:mixed sys:ro cgroup:mixed',
    `lxc.mount.entry = ${c.executor} .corral/bin/corral-exec none ro,bind,create=file 0 0`,
    `lxc.mount.entry = ${c.sockDir} .corral/run none rw,bind,create=dir 0 0`,
    'lxc.init.cmd = /.corral/bin/corral-exec /.corral/run/exec.sock',
    'lxc.signal.halt = SIGTERM',
    '',
  ].join('\n');
}
