/*
 * The egress proxy's byte relay (issue 20): one long-lived child of the agent that moves the bytes of
 * the connections the proxy has allowed, in the kernel, with splice(2) through a pipe per direction
 * under one epoll. Node's stream pipe costs about 0.8 CPU-seconds per 128 MiB and caps a namespace
 * sandbox's proxied download near 190 MiB/s; here the bytes never enter user space.
 *
 * The agent has already read the first bytes, judged them and connected upstream; it stops reading
 * both sockets and hands the pair over on stdin:
 *
 *   C <id> <client fd> <upstream fd> <flags> <n up> <n down>\n<n up bytes><n down bytes>
 *
 * The descriptors are numbers in the agent (argv[1] is its pid): the relay takes its own copies with
 * pidfd_getfd(2), so the agent must keep its sockets open until it reads the answer. The bytes are what
 * the agent read and has not passed on yet (the peeked head for upstream; anything buffered for the
 * client); they go out before anything spliced. Flags: 1 = the client's FIN was already read, 2 = the
 * upstream's, 4 = the upstream is still connecting (its bytes wait for the connect; a connect that fails
 * is answered `X`). `K <id>\n` cuts a connection.
 *
 * Answers on stdout, one line each: `T <id>` (taken: the agent closes its copies), `F <id> <errno>`
 * (not taken: the agent still owns the connection), `D <id> <bytes to upstream> <bytes to client>`
 * (both sides ended; counts include the handed-over bytes), `X <id>` (the upstream did not connect; the
 * relay let its copies go quietly and the agent, which keeps its own until it sees the connect, answers).
 *
 * A FIN is passed on once its direction is drained, and the other direction keeps flowing; an error
 * or reset on either side resets both. EOF on stdin (the agent gone) ends the relay and every
 * connection with it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

/* A handed-over head is at most the proxy's peek bound plus Node's read buffer; more is a broken agent. */
#define MAX_PRE (4u << 20)
#define STDIN_KEY UINT64_MAX
#define CHUNK (1 << 20)
#define PIPE_BYTES (1 << 20)

struct direction {
  int pr, pw;         /* the pipe: read end, write end */
  size_t inpipe;      /* bytes in the pipe */
  char *pre;          /* handed-over bytes, written before anything spliced */
  size_t prelen, preoff;
  int eof;            /* the source's FIN was read */
  int shut;           /* the FIN was passed on */
  unsigned long long bytes; /* written to the destination */
};

struct conn {
  unsigned long long id;
  uint32_t gen;
  int used;
  int connecting; /* the upstream's connect is still under way (flag 4) */
  int fd[2]; /* 0 = client (the sandbox), 1 = upstream */
  struct direction d[2]; /* 0 = client -> upstream, 1 = upstream -> client */
};

static struct conn *conns;
static uint32_t nconns, capconns, maxconns;
static uint32_t *freelist;
static uint32_t nfree;
static int epfd, pidfd;

static void die(const char *what) {
  fprintf(stderr, "wrenn-egress-relay: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void answer(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void answer(const char *fmt, ...) {
  char line[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  for (int off = 0; off < n;) {
    ssize_t w = write(1, line + off, (size_t)(n - off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) exit(0); /* the agent is gone */
    off += (int)w;
  }
}

static uint64_t key(uint32_t idx, int side) {
  return ((uint64_t)conns[idx].gen << 32) | ((uint64_t)idx << 1) | (uint64_t)side;
}

static void release_conn(uint32_t idx, int reset);

static void close_conn(uint32_t idx, int reset) {
  answer("D %llu %llu %llu\n", conns[idx].id, conns[idx].d[0].bytes, conns[idx].d[1].bytes);
  release_conn(idx, reset);
}

/*
 * The upstream never connected (refused, unreachable, or cut by the agent meanwhile): the agent, which
 * still holds both sockets until it sees the connect, answers the client. The relay's copies are closed
 * quietly (no reset: the agent's copies keep the sockets alive).
 */
static void connect_failed(uint32_t idx) {
  answer("X %llu\n", conns[idx].id);
  release_conn(idx, 0);
}

static void release_conn(uint32_t idx, int reset) {
  struct conn *c = &conns[idx];
  for (int s = 0; s < 2; s++) {
    if (c->fd[s] < 0) continue;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd[s], NULL);
    if (reset) {
      struct linger l = {1, 0};
      setsockopt(c->fd[s], SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    close(c->fd[s]);
    c->fd[s] = -1;
  }
  for (int k = 0; k < 2; k++) {
    struct direction *d = &c->d[k];
    if (d->pr >= 0) close(d->pr);
    if (d->pw >= 0) close(d->pw);
    free(d->pre);
    d->pr = d->pw = -1;
    d->pre = NULL;
  }
  c->used = 0;
  c->gen++;
  nconns--;
  freelist[nfree++] = idx;
}

/* Moves what it can in one direction; -1 on an error of either socket. */
static int pump(struct conn *c, int k) {
  struct direction *d = &c->d[k];
  int src = c->fd[k], dst = c->fd[1 - k];
  for (;;) {
    int progress = 0;
    while (d->preoff < d->prelen) {
      ssize_t n = write(dst, d->pre + d->preoff, d->prelen - d->preoff);
      if (n > 0) {
        d->preoff += (size_t)n;
        d->bytes += (unsigned long long)n;
        progress = 1;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && errno == EAGAIN) {
        break;
      } else {
        return -1;
      }
    }
    if (!d->eof) {
      ssize_t n = splice(src, NULL, d->pw, NULL, CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d->inpipe += (size_t)n;
        progress = 1;
      } else if (n == 0) {
        d->eof = 1;
        progress = 1;
      } else if (errno != EAGAIN && errno != EINTR) {
        return -1;
      }
    }
    if (d->preoff == d->prelen && d->inpipe > 0) {
      ssize_t n = splice(d->pr, NULL, dst, NULL, d->inpipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d->inpipe -= (size_t)n;
        d->bytes += (unsigned long long)n;
        progress = 1;
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        return -1;
      }
    }
    if (d->eof && !d->shut && d->inpipe == 0 && d->preoff == d->prelen) {
      if (shutdown(dst, SHUT_WR) < 0 && errno != ENOTCONN) return -1;
      d->shut = 1;
    }
    if (!progress) return 0;
  }
}

static void service(uint32_t idx) {
  struct conn *c = &conns[idx];
  if (c->connecting) {
    /* The state, not SO_ERROR: reading that would take the error from the agent's own copy. */
    struct tcp_info info;
    socklen_t len = sizeof info;
    if (getsockopt(c->fd[1], IPPROTO_TCP, TCP_INFO, &info, &len) < 0 || info.tcpi_state == TCP_CLOSE) {
      connect_failed(idx);
      return;
    }
    if (info.tcpi_state == TCP_SYN_SENT) return; /* its EPOLLOUT edge comes when it is done */
    c->connecting = 0;
  }
  if (pump(c, 0) < 0 || pump(c, 1) < 0) {
    close_conn(idx, 1);
    return;
  }
  if (c->d[0].shut && c->d[1].shut) close_conn(idx, 0);
}

static int take_fd(int fd) {
  return (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
}

static uint32_t alloc_conn(void) {
  if (nfree > 0) return freelist[--nfree];
  if (capconns == maxconns) return UINT32_MAX;
  uint32_t cap = capconns == 0 ? 64 : capconns * 2;
  if (cap > maxconns) cap = maxconns;
  struct conn *grown = realloc(conns, cap * sizeof *conns);
  uint32_t *fl = realloc(freelist, cap * sizeof *freelist);
  if (!grown || !fl) die("out of memory");
  conns = grown;
  freelist = fl;
  for (uint32_t i = capconns; i < cap; i++) {
    memset(&conns[i], 0, sizeof conns[i]);
    if (i != capconns) freelist[nfree++] = i;
  }
  uint32_t idx = capconns;
  capconns = cap;
  return idx;
}

/* Takes a connection over; the pre-buffers are owned by the relay from here. */
static void take(unsigned long long id, int afd, int bfd, int flags, char *up, size_t nup, char *down, size_t ndown) {
  int err = 0;
  int fds[2] = {-1, -1}, p0[2] = {-1, -1}, p1[2] = {-1, -1};
  uint32_t idx = alloc_conn();
  if (idx == UINT32_MAX) err = EMFILE;
  if (!err && (fds[0] = take_fd(afd)) < 0) err = errno;
  if (!err && (fds[1] = take_fd(bfd)) < 0) err = errno;
  if (!err && pipe2(p0, O_NONBLOCK | O_CLOEXEC) < 0) err = errno;
  if (!err && pipe2(p1, O_NONBLOCK | O_CLOEXEC) < 0) err = errno;
  /* A bigger pipe moves a bulk transfer in fewer splice calls (the default 64 KiB took 16 times as
   * many); refused above fs.pipe-max-size or the user's pipe quota, then the default serves. */
  for (int k = 0; !err && k < 2; k++) fcntl(k == 0 ? p0[1] : p1[1], F_SETPIPE_SZ, PIPE_BYTES);
  for (int s = 0; !err && s < 2; s++) {
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fds[s], SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM) err = ENOTSOCK;
  }
  if (err) {
    int all[] = {fds[0], fds[1], p0[0], p0[1], p1[0], p1[1]};
    for (unsigned i = 0; i < 6; i++)
      if (all[i] >= 0) close(all[i]);
    if (idx != UINT32_MAX) freelist[nfree++] = idx;
    free(up);
    free(down);
    answer("F %llu %d\n", id, err);
    return;
  }
  struct conn *c = &conns[idx];
  c->id = id;
  c->used = 1;
  c->fd[0] = fds[0];
  c->fd[1] = fds[1];
  int pipes[2][2] = {{p0[0], p0[1]}, {p1[0], p1[1]}};
  char *pre[2] = {up, down};
  size_t npre[2] = {nup, ndown};
  for (int k = 0; k < 2; k++) {
    c->d[k] = (struct direction){.pr = pipes[k][0], .pw = pipes[k][1], .pre = pre[k], .prelen = npre[k]};
    c->d[k].eof = (flags >> k) & 1;
  }
  c->connecting = (flags & 4) != 0;
  nconns++;
  int one = 1;
  for (int s = 0; s < 2; s++) {
    /* Shared with the agent's copy: already non-blocking, made sure of anyway. */
    fcntl(c->fd[s], F_SETFL, fcntl(c->fd[s], F_GETFL) | O_NONBLOCK);
    setsockopt(c->fd[s], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u64 = key(idx, s)};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd[s], &ev) < 0) die("epoll_ctl");
  }
  answer("T %llu\n", id);
  service(idx);
}

static void cut(unsigned long long id) {
  for (uint32_t i = 0; i < capconns; i++) {
    if (conns[i].used && conns[i].id == id) {
      if (conns[i].connecting)
        connect_failed(i);
      else
        close_conn(i, 1);
      return;
    }
  }
}

static char *inbuf;
static size_t inlen, incap;

/* Parses every complete command in the input buffer. */
static void commands(void) {
  size_t pos = 0;
  for (;;) {
    char *nl = memchr(inbuf + pos, '\n', inlen - pos);
    if (!nl) break;
    size_t hlen = (size_t)(nl - (inbuf + pos)) + 1;
    *nl = '\0';
    const char *line = inbuf + pos;
    unsigned long long id, nup, ndown;
    int afd, bfd, flags;
    if (line[0] == 'C' && sscanf(line, "C %llu %d %d %d %llu %llu", &id, &afd, &bfd, &flags, &nup, &ndown) == 6) {
      if (nup > MAX_PRE || ndown > MAX_PRE) {
        errno = EINVAL;
        die("handed-over bytes over the bound");
      }
      if (inlen - pos - hlen < nup + ndown) {
        *nl = '\n';
        break; /* the bytes are still coming */
      }
      char *up = malloc(nup + 1), *down = malloc(ndown + 1);
      if (!up || !down) die("out of memory");
      memcpy(up, inbuf + pos + hlen, nup);
      memcpy(down, inbuf + pos + hlen + nup, ndown);
      pos += hlen + nup + ndown;
      take(id, afd, bfd, flags, up, nup, down, ndown);
    } else if (line[0] == 'K' && sscanf(line, "K %llu", &id) == 1) {
      pos += hlen;
      cut(id);
    } else {
      errno = EINVAL;
      die("unknown command");
    }
  }
  memmove(inbuf, inbuf + pos, inlen - pos);
  inlen -= pos;
}

static void read_stdin(void) {
  for (;;) {
    if (incap - inlen < 65536) {
      incap = incap ? incap * 2 : 131072;
      if (incap > 2 * MAX_PRE + 131072) incap = 2 * MAX_PRE + 131072;
      inbuf = realloc(inbuf, incap);
      if (!inbuf) die("out of memory");
      if (incap == inlen) {
        errno = EINVAL;
        die("a command over the bound");
      }
    }
    ssize_t n = read(0, inbuf + inlen, incap - inlen);
    if (n > 0) {
      inlen += (size_t)n;
      commands();
    } else if (n == 0) {
      exit(0); /* the agent is gone: every connection ends with the relay */
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN) {
      return;
    } else {
      die("read stdin");
    }
  }
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s <agent pid>\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  /*
   * The relay stands in for the kernel's forwarding of a direct connection, which runs in softirq ahead
   * of every process; at the default priority each busy process on the host (other sandboxes' guests
   * among them) would delay every proxied byte. Its work per byte is a few splice calls, so what it
   * takes from others at -10 is small. Not fatal where the agent may not raise priority.
   */
  setpriority(PRIO_PROCESS, 0, -10);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  pidfd = (int)syscall(SYS_pidfd_open, (pid_t)atoi(argv[1]), 0);
  if (pidfd < 0) die("pidfd_open");
  /* Six descriptors a connection (two sockets, two pipes); the agent bounds connections per sandbox. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  maxconns = rl.rlim_cur > 64 ? (uint32_t)((rl.rlim_cur - 32) / 6) : 1;
  if (argc > 2) {
    uint32_t cap = (uint32_t)strtoul(argv[2], NULL, 10);
    if (cap > 0 && cap < maxconns) maxconns = cap;
  }
  fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) die("epoll_create1");
  struct epoll_event in = {.events = EPOLLIN, .data.u64 = STDIN_KEY};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &in) < 0) die("epoll_ctl stdin");
  answer("R %u\n", maxconns);
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(epfd, evs, 256, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      uint64_t k = evs[i].data.u64;
      if (k == STDIN_KEY) {
        read_stdin();
        continue;
      }
      uint32_t idx = (uint32_t)(k & 0xffffffffu) >> 1;
      uint32_t gen = (uint32_t)(k >> 32);
      if (idx >= capconns || !conns[idx].used || conns[idx].gen != gen) continue; /* ended earlier in this batch */
      service(idx);
    }
  }
}
