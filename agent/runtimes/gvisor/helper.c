/*
 * wrenn-gvisor-helper: what Debian 12's runsc (gVisor build 20221219) leaves out of its kernel, done
 * from inside the guest. The agent compiles this file once on the host (helper.ts) and places it in
 * each gVisor guest's writable layer. Three modes, picked by the program name or the first argument:
 *
 *   tty-signals SOCKET -- PROGRAM ARGS...
 *     This gVisor's terminal line discipline echoes ^C, ^\ and ^Z but never turns them into SIGINT,
 *     SIGQUIT or SIGTSTP, and only a process whose controlling terminal is the PTY may ask for its
 *     foreground process group (TIOCGPGRP). envd starts a PTY's program through this mode: it forks a
 *     watcher that stays in the PTY's session (and dies with the program), then execs the program,
 *     which keeps its pid. envd sends the watcher each ^C/^\/^Z byte typed into the PTY over SOCKET; the
 *     watcher answers '1' when the terminal's ISIG is on and the byte is its INTR/QUIT/SUSP character
 *     (after signalling the foreground process group and echoing it as Linux does), else '0' (envd
 *     then types the byte: a raw-mode program such as vim reads it).
 *
 *   sudod SOCKET
 *     This gVisor ignores set-user-ID bits (and reports no_new_privs as always set), so sudo cannot
 *     raise privileges. envd runs this daemon as root; the `sudo` mode below asks it to start the real
 *     /usr/bin/sudo as the kernel would for a set-user-ID root program: real uid and gid (and groups)
 *     of the caller (taken from the socket's peer credentials, never from the request), effective uid
 *     0, the caller's stdin, stdout, stderr and working directory, its arguments, and its environment
 *     without the variables glibc ignores in set-user-ID programs (this gVisor never sets AT_SECURE).
 *     sudo then applies /etc/sudoers as it always does.
 *
 *   sudo ARGS...   (installed as /usr/local/bin/sudo, ahead of /usr/bin/sudo on PATH)
 *     Sends its request to sudod, forwards signals to the real sudo, and exits as it does. When sudod
 *     cannot be reached it execs /usr/bin/sudo (which then reports the no-new-privileges error).
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
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include <grp.h>

#define REAL_SUDO "/usr/bin/sudo"
#define SUDO_SOCKET "/run/wrenn-gvisor/sudo.sock"
#define CALLER_SHIM "/usr/local/lib/wrenn-gvisor/sudo-caller.so"
#define MAX_REQUEST (1024 * 1024)

static int connect_unix(const char *path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(addr.sun_path)) return -1;
  strcpy(addr.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int read_all(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* ------------------------------------------------------------------------------- tty-signals */

static void watch_terminal(int sock, pid_t leader) {
  /* The watcher shares the PTY's foreground group with the shell at its prompt: it must outlive the
   * signals it sends, and write its echo even from a background group. */
  signal(SIGINT, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
  signal(SIGTSTP, SIG_IGN);
  signal(SIGTTOU, SIG_IGN);
  signal(SIGTTIN, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  if (getppid() != leader) _exit(0);
  int tty = STDIN_FILENO;
  unsigned char byte;
  for (;;) {
    ssize_t n = read(sock, &byte, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) _exit(0);
    char answer = '0';
    struct termios t;
    if (tcgetattr(tty, &t) == 0 && (t.c_lflag & ISIG)) {
      int sig = 0;
      if (byte == t.c_cc[VINTR]) sig = SIGINT;
      else if (byte == t.c_cc[VQUIT]) sig = SIGQUIT;
      else if (byte == t.c_cc[VSUSP]) sig = SIGTSTP;
      pid_t group = sig ? tcgetpgrp(tty) : -1;
      if (sig && group > 0) {
        if (!(t.c_lflag & NOFLSH)) tcflush(tty, TCIFLUSH);
        if ((t.c_lflag & ECHO) && (t.c_lflag & ECHOCTL)) {
          char echo[2] = {'^', (char)(byte ^ 0x40)};
          (void)write_all(tty, echo, 2);
        }
        kill(-group, sig);
        answer = '1';
      }
    }
    if (write_all(sock, &answer, 1) != 0) _exit(0);
  }
}

static int tty_signals(int argc, char **argv) {
  if (argc < 5 || strcmp(argv[3], "--") != 0) {
    fprintf(stderr, "usage: %s tty-signals SOCKET -- PROGRAM ARGS...\n", argv[0]);
    return 2;
  }
  pid_t leader = getpid();
  int sock = connect_unix(argv[2]);
  if (sock >= 0) {
    pid_t watcher = fork();
    if (watcher == 0) {
      /* Dies with the program, so it never holds the terminal open after the program's end. */
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      prctl(PR_SET_NAME, "wrenn-tty-sig");
      watch_terminal(sock, leader);
    }
    close(sock);
  }
  execvp(argv[4], &argv[4]);
  fprintf(stderr, "%s: %s: %s\n", argv[0], argv[4], strerror(errno));
  return 127;
}

/* ------------------------------------------------------------------------------------ sudod */

/* Variables glibc drops for set-user-ID programs (its unsecure-envvars list), plus every LD_, MALLOC_
 * and GLIBC_ variable: without AT_SECURE they would steer the dynamic loader of a root process. */
static int unsafe_env(const char *entry) {
  static const char *const prefixes[] = {"LD_", "MALLOC_", "GLIBC_", NULL};
  static const char *const names[] = {"GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH",
                                      "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR",
                                      "TZDIR", NULL};
  for (int i = 0; prefixes[i]; i++)
    if (strncmp(entry, prefixes[i], strlen(prefixes[i])) == 0) return 1;
  const char *eq = strchr(entry, '=');
  size_t len = eq ? (size_t)(eq - entry) : strlen(entry);
  for (int i = 0; names[i]; i++)
    if (strlen(names[i]) == len && strncmp(entry, names[i], len) == 0) return 1;
  return 0;
}

/* The caller's supplementary groups, from /proc (the caller waits on the socket while this runs). */
static int caller_groups(pid_t pid, gid_t *groups, int max) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "re");
  if (!f) return -1;
  char line[4096];
  int n = -1;
  while (fgets(line, sizeof(line), f)) {
    if (strncmp(line, "Groups:", 7) != 0) continue;
    n = 0;
    char *p = line + 7;
    while (n < max) {
      char *end;
      unsigned long g = strtoul(p, &end, 10);
      if (end == p) break;
      groups[n++] = (gid_t)g;
      p = end;
    }
    break;
  }
  fclose(f);
  return n;
}

static int sigchld_pipe[2] = {-1, -1};

static void on_sigchld(int sig) {
  (void)sig;
  int saved = errno;
  (void)write(sigchld_pipe[1], "c", 1);
  errno = saved;
}

/* Serves one request in its own process: start the real sudo as root with the caller's identity given
 * to it through sudo-caller.so, relay the caller's signals to it, then report its wait status. */
static void serve(int conn) {
  /* The caller's identity comes with its first message (SCM_CREDENTIALS, filled in by the kernel once
   * this end asks for it; a caller may only name its own ids). This gVisor answers SO_PEERCRED with the
   * asking process's own credentials, so that cannot be used. */
  int on = 1;
  if (setsockopt(conn, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) != 0) _exit(1);
  if (write_all(conn, "r", 1) != 0) _exit(1);

  uint32_t len = 0;
  int fds[4] = {-1, -1, -1, -1};
  struct ucred cred = {.pid = 0};
  int have_fds = 0, have_cred = 0;
  union {
    char buf[CMSG_SPACE(sizeof(fds)) + CMSG_SPACE(sizeof(struct ucred))];
    struct cmsghdr align;
  } control;
  struct iovec iov = {.iov_base = &len, .iov_len = sizeof(len)};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof(control.buf)};
  ssize_t got = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
  if (got != (ssize_t)sizeof(len) || len == 0 || len > MAX_REQUEST || (msg.msg_flags & MSG_CTRUNC)) _exit(1);
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(fds))) {
      memcpy(fds, CMSG_DATA(c), sizeof(fds));
      have_fds = 1;
    } else if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(cred))) {
      memcpy(&cred, CMSG_DATA(c), sizeof(cred));
      have_cred = 1;
    }
  }
  /* 65534 is what this kernel reports when it has no credentials for the sender. */
  if (!have_fds || !have_cred || cred.pid <= 0 || cred.uid == 65534 || cred.gid == 65534) _exit(1);
  char *body = malloc(len + 1);
  if (!body || read_all(conn, body, len) != 0) _exit(1);
  body[len] = '\0';

  /* body: argc NUL argv... envc NUL env... (each string NUL-terminated) */
  char *p = body, *end = body + len;
  long argc = strtol(p, NULL, 10);
  p += strlen(p) + 1;
  if (argc < 1 || argc > 65536) _exit(1);
  char **args = calloc((size_t)argc + 1, sizeof(char *));
  for (long i = 0; i < argc; i++) {
    if (p >= end) _exit(1);
    args[i] = p;
    p += strlen(p) + 1;
  }
  args[0] = "sudo";
  if (p >= end) _exit(1);
  long envc = strtol(p, NULL, 10);
  p += strlen(p) + 1;
  if (envc < 0 || envc > 65536) _exit(1);
  char **env = calloc((size_t)envc + 3, sizeof(char *));
  long kept = 0;
  for (long i = 0; i < envc; i++) {
    if (p >= end) _exit(1);
    if (!unsafe_env(p) && strncmp(p, "WRENN_SUDO_CALLER=", 18) != 0) env[kept++] = p;
    p += strlen(p) + 1;
  }
  char caller[64];
  snprintf(caller, sizeof(caller), "WRENN_SUDO_CALLER=%u:%u", (unsigned)cred.uid, (unsigned)cred.gid);
  env[kept++] = caller;
  env[kept++] = "LD_PRELOAD=" CALLER_SHIM;

  gid_t groups[256];
  int ngroups = caller_groups(cred.pid, groups, 256);
  if (ngroups < 0) ngroups = 0;

  if (pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK) != 0) _exit(1);
  struct sigaction chld = {.sa_handler = on_sigchld, .sa_flags = SA_RESTART | SA_NOCLDSTOP};
  sigaction(SIGCHLD, &chld, NULL);

  pid_t child = fork();
  if (child < 0) _exit(1);
  if (child == 0) {
    setsid();
    for (int i = 0; i < 3; i++)
      if (dup2(fds[i], i) < 0) _exit(126);
    if (fchdir(fds[3]) != 0) _exit(126);
    for (int fd = 3; fd < 1024; fd++) close(fd);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    /* A set-user-ID root exec by this caller, except that the real uid is root too (this gVisor makes
     * the effective uid the real one at every exec); sudo-caller.so shows sudo the caller's real uid. */
    if (setgroups((size_t)ngroups, groups) != 0) _exit(126);
    if (setresgid(cred.gid, cred.gid, cred.gid) != 0) _exit(126);
    if (setresuid(0, 0, 0) != 0) _exit(126);
    execve(REAL_SUDO, args, env);
    _exit(127);
  }
  for (int i = 0; i < 4; i++) close(fds[i]);
  /* Each byte from the caller is a signal to relay (the caller may not signal a root process). */
  int status = 0;
  int conn_open = 1;
  for (;;) {
    pid_t done = waitpid(child, &status, WNOHANG);
    if (done == child) break;
    struct pollfd pfd[2] = {{.fd = sigchld_pipe[0], .events = POLLIN}, {.fd = conn, .events = POLLIN}};
    if (poll(pfd, conn_open ? 2 : 1, -1) < 0 && errno != EINTR) break;
    if (pfd[0].revents & POLLIN) {
      char drain[16];
      while (read(sigchld_pipe[0], drain, sizeof(drain)) > 0) {
      }
    }
    if (conn_open && (pfd[1].revents & (POLLIN | POLLHUP))) {
      unsigned char sig;
      ssize_t n = read(conn, &sig, 1);
      if (n == 1) {
        if (sig == SIGINT || sig == SIGQUIT || sig == SIGTERM || sig == SIGHUP || sig == SIGUSR1 || sig == SIGUSR2 ||
            sig == SIGWINCH || sig == SIGCONT)
          kill(child, sig);
      } else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
        /* The caller is gone: as when a terminal hangs up on sudo. */
        conn_open = 0;
        kill(child, SIGHUP);
      }
    }
  }
  int32_t status32 = (int32_t)status;
  (void)write_all(conn, &status32, sizeof(status32));
  _exit(0);
}

static int sudod(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s sudod SOCKET\n", argv[0]);
    return 2;
  }
  const char *path = argv[2];
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(addr.sun_path)) return 2;
  strcpy(addr.sun_path, path);
  char dir[sizeof(addr.sun_path)];
  strcpy(dir, path);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = '\0';
    mkdir(dir, 0755);
    chmod(dir, 0755);
  }
  unlink(path);
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0 || bind(sock, (struct sockaddr *)&addr, sizeof(addr)) != 0 || chmod(path, 0666) != 0 ||
      listen(sock, 64) != 0) {
    fprintf(stderr, "sudod: %s: %s\n", path, strerror(errno));
    return 1;
  }
  /* Handlers are reaped by the kernel; each waits for its own sudo. */
  struct sigaction ign = {.sa_handler = SIG_IGN, .sa_flags = SA_NOCLDWAIT};
  sigaction(SIGCHLD, &ign, NULL);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  for (;;) {
    int conn = accept4(sock, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0) continue;
    pid_t handler = fork();
    if (handler == 0) {
      close(sock);
      signal(SIGCHLD, SIG_DFL);
      serve(conn);
    }
    close(conn);
  }
}

/* ------------------------------------------------------------------------------------- sudo */

static int sudo_sock = -1;

static void forward_signal(int sig) {
  unsigned char byte = (unsigned char)sig;
  if (sudo_sock >= 0) (void)write(sudo_sock, &byte, 1);
}

static int sudo_client(int argc, char **argv) {
  int sock = connect_unix(SUDO_SOCKET);
  if (sock < 0) {
    argv[0] = "sudo";
    execv(REAL_SUDO, argv);
    fprintf(stderr, "sudo: %s: %s\n", REAL_SUDO, strerror(errno));
    return 1;
  }
  extern char **environ;
  size_t cap = 4096, used = 0;
  char *body = malloc(cap);
#define APPEND(s)                                                       \
  do {                                                                  \
    size_t l = strlen(s) + 1;                                           \
    while (used + l > cap) body = realloc(body, cap *= 2);              \
    memcpy(body + used, (s), l);                                        \
    used += l;                                                          \
  } while (0)
  char count[32];
  snprintf(count, sizeof(count), "%d", argc);
  APPEND(count);
  for (int i = 0; i < argc; i++) APPEND(argv[i]);
  int envc = 0;
  for (char **e = environ; *e; e++) envc++;
  snprintf(count, sizeof(count), "%d", envc);
  APPEND(count);
  for (char **e = environ; *e; e++) APPEND(*e);
  if (used > MAX_REQUEST) {
    fprintf(stderr, "sudo: argument list and environment too long\n");
    return 1;
  }

  int cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cwd < 0) cwd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int fds[4] = {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO, cwd};
  uint32_t len = (uint32_t)used;
  char ready;
  if (read_all(sock, &ready, 1) != 0) {
    fprintf(stderr, "sudo: %s did not answer\n", SUDO_SOCKET);
    return 1;
  }
  char control[CMSG_SPACE(sizeof(fds))];
  memset(control, 0, sizeof(control));
  struct iovec iov = {.iov_base = &len, .iov_len = sizeof(len)};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof(control)};
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(fds));
  memcpy(CMSG_DATA(c), fds, sizeof(fds));
  if (sendmsg(sock, &msg, 0) != (ssize_t)sizeof(len) || write_all(sock, body, used) != 0) {
    fprintf(stderr, "sudo: cannot reach %s\n", SUDO_SOCKET);
    return 1;
  }
  close(cwd);
  sudo_sock = sock;
  /* The terminal's signals reach this process (the foreground one); the real sudo relays them on. */
  int forwarded[] = {SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};
  struct sigaction fwd = {.sa_handler = forward_signal, .sa_flags = SA_RESTART};
  for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++) sigaction(forwarded[i], &fwd, NULL);
  int32_t status;
  if (read_all(sock, &status, sizeof(status)) != 0) {
    fprintf(stderr, "sudo: %s ended the request\n", SUDO_SOCKET);
    return 1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    signal(sig, SIG_DFL);
    raise(sig);
    return 128 + sig;
  }
  return 1;
}

int main(int argc, char **argv) {
  const char *name = strrchr(argv[0], '/');
  name = name ? name + 1 : argv[0];
  if (strcmp(name, "sudo") == 0) return sudo_client(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "tty-signals") == 0) return tty_signals(argc, argv);
  if (argc >= 2 && strcmp(argv[1], "sudod") == 0) return sudod(argc, argv);
  fprintf(stderr, "usage: %s tty-signals SOCKET -- PROGRAM ARGS... | sudod SOCKET (or run as sudo)\n", argv[0]);
  return 2;
}
