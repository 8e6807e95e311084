/*
 * corral-exec: the resident executor inside every corral container.
 *
 * It runs as the container's init (PID 1 in the container's PID namespace, root only inside the
 * user namespace), listens on a unix socket that the agent reaches through a bind-mounted
 * directory, and runs one command at a time for the agent. Keeping it resident is what makes a
 * warm run cheap: a run costs one fork+exec inside the container instead of an `lxc-attach`
 * (~4.5 ms, measured in bench/invoke.ts).
 *
 * Wire format, both directions: [u32 little-endian payload length][u8 type][payload].
 *   agent -> exec  RUN   : u32 argc, argc NUL-terminated strings, u32 envc, envc "K=V" NUL-terminated
 *                          strings, then the rest of the payload is the job's stdin.
 *                  KILL  : u8 signal number; signals the job's whole process group.
 *   exec -> agent  READY : empty; sent on every accepted connection.
 *                  (type 11 is retired: a START frame woke the agent once more per run for nothing.)
 *                  OUT   : stdout bytes.        ERR : stderr bytes.
 *                  EXIT  : i32 wait status (as waitpid gives it).
 *
 * The job runs in its own session and process group; when it exits, whatever is left of its group
 * is killed so that nothing it started outlives the attempt. As PID 1 the executor also reaps
 * every orphan in the container.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { T_RUN = 1, T_KILL = 2, T_READY = 10, T_OUT = 12, T_ERR = 13, T_EXIT = 14 };

#define MAX_FRAME (4u * 1024u * 1024u)
#define CHUNK 32768
/* After the job exits, how long to wait for its pipes to reach EOF before killing stragglers. */
#define DRAIN_MS 100

static int conn = -1;
static pid_t job = 0;
static int job_out = -1, job_err = -1;
static int job_exited = 0, job_status = 0;
static struct timespec exited_at;

static void die(const char *what) {
  perror(what);
  exit(111);
}

static int write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd w = {fd, POLLOUT, 0};
        poll(&w, 1, 1000);
        continue;
      }
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* One writev per frame: the agent wakes once per frame, not once for the head and again for the body. */
static void send_frame(uint8_t type, const void *payload, uint32_t len) {
  if (conn < 0) return;
  unsigned char head[5] = {len & 0xff, (len >> 8) & 0xff, (len >> 16) & 0xff, (len >> 24) & 0xff, type};
  struct iovec iov[2] = {{head, 5}, {(void *)payload, len}};
  ssize_t n;
  do n = writev(conn, iov, len ? 2 : 1);
  while (n < 0 && errno == EINTR);
  if (n == (ssize_t)(5 + len)) return;
  /* A partial write (a full socket buffer): finish it the slow way. */
  size_t done = n > 0 ? (size_t)n : 0;
  if (n < 0 && errno != EAGAIN) goto fail;
  if (done < 5 && write_all(conn, head + done, 5 - done) < 0) goto fail;
  if (len && write_all(conn, (const char *)payload + (done > 5 ? done - 5 : 0), len - (done > 5 ? done - 5 : 0)) < 0) goto fail;
  return;
fail:
  close(conn);
  conn = -1;
}

static uint32_t get_u32(const unsigned char *p) { return p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24); }

static long ms_since(const struct timespec *t) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

/* Parses `count` NUL-terminated strings from p[0..end); returns a NULL-terminated vector. */
static char **strings(unsigned char **p, unsigned char *end, uint32_t count) {
  if (count > 65536) return NULL;
  char **v = calloc(count + 1, sizeof(char *));
  if (!v) return NULL;
  for (uint32_t i = 0; i < count; i++) {
    unsigned char *nul = memchr(*p, 0, (size_t)(end - *p));
    if (!nul) {
      free(v);
      return NULL;
    }
    v[i] = (char *)*p;
    *p = nul + 1;
  }
  return v;
}

static const char *env_get(char **envp, const char *name) {
  size_t n = strlen(name);
  for (char **e = envp; *e; e++)
    if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
  return NULL;
}

static void finish_job(void) {
  /* Kill whatever the job left behind in its process group. */
  kill(-job, SIGKILL);
  if (job_out >= 0) close(job_out);
  if (job_err >= 0) close(job_err);
  job_out = job_err = -1;
  int32_t st = job_status;
  send_frame(T_EXIT, &st, 4);
  job = 0;
  job_exited = 0;
}

static void start_job(unsigned char *payload, uint32_t len) {
  unsigned char *p = payload, *end = payload + len;
  if (job) {
    const char msg[] = "corral-exec: a job is already running\n";
    send_frame(T_ERR, msg, sizeof msg - 1);
    int32_t st = 126 << 8;
    send_frame(T_EXIT, &st, 4);
    return;
  }
  char **argv = NULL, **envp = NULL;
  if (end - p < 4) goto bad;
  uint32_t argc = get_u32(p);
  p += 4;
  if (argc == 0 || !(argv = strings(&p, end, argc))) goto bad;
  if (end - p < 4) goto bad;
  uint32_t envc = get_u32(p);
  p += 4;
  if (!(envp = strings(&p, end, envc))) goto bad;

  /* stdin is a memfd holding the bytes the agent sent, so a job that never reads cannot block us. */
  int in = memfd_create("stdin", MFD_CLOEXEC);
  if (in < 0 || write_all(in, p, (size_t)(end - p)) < 0) goto bad;
  lseek(in, 0, SEEK_SET);
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) goto bad;

  pid_t pid = fork();
  if (pid < 0) goto bad;
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid();
    dup2(in, 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    const char *home = env_get(envp, "HOME");
    if (!home || chdir(home) < 0) chdir("/");
    const char *path = env_get(envp, "PATH");
    if (path) setenv("PATH", path, 1);
    execvpe(argv[0], argv, envp);
    dprintf(2, "corral-exec: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  close(in);
  close(out[1]);
  close(err[1]);
  job = pid;
  job_out = out[0];
  job_err = err[0];
  fcntl(job_out, F_SETFL, O_NONBLOCK);
  fcntl(job_err, F_SETFL, O_NONBLOCK);
  free(argv);
  free(envp);
  return;
bad:
  free(argv);
  free(envp);
  {
    const char msg[] = "corral-exec: malformed run request\n";
    send_frame(T_ERR, msg, sizeof msg - 1);
    int32_t st = 126 << 8;
    send_frame(T_EXIT, &st, 4);
  }
}

/* Reads what a job pipe holds; returns 0 at EOF. */
static int pump(int *fd, uint8_t type) {
  static char buf[CHUNK];
  for (;;) {
    ssize_t n = read(*fd, buf, sizeof buf);
    if (n > 0) {
      send_frame(type, buf, (uint32_t)n);
      continue;
    }
    if (n == 0) {
      close(*fd);
      *fd = -1;
      return 0;
    }
    if (errno == EINTR) continue;
    return 1; /* EAGAIN: more later */
  }
}

static void reap(void) {
  int st;
  pid_t pid;
  while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
    if (pid == job && !job_exited) {
      job_exited = 1;
      job_status = st;
      clock_gettime(CLOCK_MONOTONIC, &exited_at);
    }
  }
}

int main(int argc, char **argv) {
  const char *sock_path = argc > 1 ? argv[1] : "/.corral/run/exec.sock";
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGPWR);
  sigaddset(&mask, SIGUSR1);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  signal(SIGPIPE, SIG_IGN);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die("signalfd");

  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(sock_path) >= sizeof addr.sun_path) die("socket path");
  strcpy(addr.sun_path, sock_path);
  unlink(sock_path);
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
  chmod(sock_path, 0600);
  if (listen(lfd, 4) < 0) die("listen");

  unsigned char *in = NULL;
  size_t in_len = 0, in_cap = 0;

  for (;;) {
    struct pollfd fds[5];
    int n = 0;
    fds[n++] = (struct pollfd){sfd, POLLIN, 0};
    fds[n++] = (struct pollfd){lfd, POLLIN, 0};
    int ci = -1, oi = -1, ei = -1;
    if (conn >= 0) ci = n, fds[n++] = (struct pollfd){conn, POLLIN, 0};
    if (job_out >= 0) oi = n, fds[n++] = (struct pollfd){job_out, POLLIN, 0};
    if (job_err >= 0) ei = n, fds[n++] = (struct pollfd){job_err, POLLIN, 0};
    int timeout = job_exited ? 10 : -1;
    if (poll(fds, (nfds_t)n, timeout) < 0 && errno != EINTR) die("poll");

    if (fds[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGCHLD) reap();
        else exit(0); /* halt: the container is being stopped */
      }
    }
    if (fds[1].revents & POLLIN) {
      int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (c >= 0) {
        /* One agent connection at a time; a new one replaces the old. */
        if (conn >= 0) close(conn);
        conn = c;
        in_len = 0;
        send_frame(T_READY, NULL, 0);
        continue;
      }
    }
    if (oi >= 0 && (fds[oi].revents & (POLLIN | POLLHUP))) pump(&job_out, T_OUT);
    if (ei >= 0 && (fds[ei].revents & (POLLIN | POLLHUP))) pump(&job_err, T_ERR);
    if (job && job_exited && ((job_out < 0 && job_err < 0) || ms_since(&exited_at) >= DRAIN_MS)) {
      if (job_out >= 0) pump(&job_out, T_OUT);
      if (job_err >= 0) pump(&job_err, T_ERR);
      finish_job();
    }
    if (ci >= 0 && (fds[ci].revents & (POLLIN | POLLHUP | POLLERR))) {
      if (in_cap - in_len < CHUNK) {
        in_cap = in_cap ? in_cap * 2 : 65536;
        if (in_cap > MAX_FRAME + 5 + CHUNK) in_cap = MAX_FRAME + 5 + CHUNK;
        in = realloc(in, in_cap);
        if (!in) die("realloc");
      }
      ssize_t r = read(conn, in + in_len, in_cap - in_len);
      if (r <= 0) {
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        /* The agent went away: stop the job it can no longer hear from. */
        close(conn);
        conn = -1;
        if (job) kill(-job, SIGKILL);
        continue;
      }
      in_len += (size_t)r;
      while (in_len >= 5) {
        uint32_t len = get_u32(in);
        if (len > MAX_FRAME) {
          close(conn);
          conn = -1;
          in_len = 0;
          break;
        }
        if (in_len < 5 + (size_t)len) break;
        uint8_t type = in[4];
        if (type == T_RUN) start_job(in + 5, len);
        else if (type == T_KILL && len == 1 && job) {
          kill(-job, in[5]);
          kill(job, in[5]);
        }
        memmove(in, in + 5 + len, in_len - 5 - len);
        in_len -= 5 + len;
      }
    }
  }
}
