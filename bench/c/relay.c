/*
 * The smallest vhost-user relay: the anchor for `trace record`'s proxy in bench/guest-iommu.ts.
 *
 *   relay LISTEN_PATH CONNECT_PATH
 *
 * Per front-end connection it connects to the back-end and passes every message on whole,
 * with its fds, in both directions; SET_BACKEND_REQ_FD gets a socketpair of the relay's own
 * in place of the front-end's socket, so the back-end channel is relayed as well. That is
 * the same path as the proxy's (every message one extra hop through one process), without
 * recording, framing in JavaScript or an event loop: what any relay costs on this machine.
 * It blocks in poll(2), trusts its peers (a bench tool, not a product) and serves one
 * connection at a time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define HEADER 12
#define MAX_PAYLOAD 65536
#define MAX_FDS 8
#define SET_BACKEND_REQ_FD 21

static uint8_t buffer[HEADER + MAX_PAYLOAD];

static int read_full(int fd, uint8_t *at, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, at, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    at += r;
    n -= (size_t)r;
  }
  return 0;
}

/* One whole message into buffer; its fds into fds. Returns its length, -1 on EOF or error. */
static int receive(int fd, int *fds, int *nfds) {
  char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  struct iovec iov = {buffer, HEADER};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
  ssize_t n;
  do n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
  if (n <= 0) return -1;
  *nfds = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    memcpy(fds + *nfds, CMSG_DATA(c), sizeof(int) * (size_t)count);
    *nfds += count;
  }
  if (n < HEADER && read_full(fd, buffer + n, HEADER - (size_t)n) != 0) return -1;
  uint32_t size;
  memcpy(&size, buffer + 8, 4);
  if (size > MAX_PAYLOAD || read_full(fd, buffer + HEADER, size) != 0) return -1;
  return HEADER + (int)size;
}

static int send_all(int fd, int length, const int *fds, int nfds) {
  char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  int sent = 0;
  while (sent < length) {
    struct iovec iov = {buffer + sent, (size_t)(length - sent)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (sent == 0 && nfds > 0) {
      mh.msg_control = control;
      mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
      struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    sent += (int)n;
  }
  return 0;
}

static void close_fds(const int *fds, int nfds) {
  for (int i = 0; i < nfds; i++) close(fds[i]);
}

static int connect_to(const char *path) {
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  strncpy(a.sun_path, path, sizeof a.sun_path - 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    perror("relay: connect");
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

/* Relays one front-end connection until either side closes. */
static void relay(int frontend, const char *backend_path) {
  enum { FRONTEND, BACKEND, CHANNEL_FRONTEND, CHANNEL_BACKEND };
  static const int to[] = {BACKEND, FRONTEND, CHANNEL_BACKEND, CHANNEL_FRONTEND};
  struct pollfd p[4] = {{.fd = frontend}, {.fd = connect_to(backend_path)}, {.fd = -1}, {.fd = -1}};
  for (int i = 0; i < 4; i++) p[i].events = POLLIN;
  while (p[BACKEND].fd >= 0) {
    if (poll(p, 4, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    int done = 0;
    for (int i = 0; i < 4 && !done; i++) {
      if (p[i].fd < 0 || p[i].revents == 0) continue;
      int fds[MAX_FDS], nfds = 0;
      int length = receive(p[i].fd, fds, &nfds);
      if (length < 0 || p[to[i]].fd < 0) {
        close_fds(fds, nfds);
        done = 1;
        break;
      }
      uint32_t request;
      memcpy(&request, buffer, 4);
      if (i == FRONTEND && request == SET_BACKEND_REQ_FD && nfds == 1 && p[CHANNEL_FRONTEND].fd < 0) {
        int pair[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
          close_fds(fds, nfds);
          done = 1;
          break;
        }
        p[CHANNEL_FRONTEND].fd = fds[0];
        p[CHANNEL_BACKEND].fd = pair[0];
        fds[0] = pair[1];
      }
      if (send_all(p[to[i]].fd, length, fds, nfds) != 0) done = 1;
      close_fds(fds, nfds);
    }
    if (done) break;
  }
  for (int i = 0; i < 4; i++)
    if (p[i].fd >= 0) close(p[i].fd);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: relay LISTEN_PATH CONNECT_PATH\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
  unlink(argv[1]);
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0 || bind(listener, (struct sockaddr *)&a, sizeof a) != 0 || listen(listener, 4) != 0) {
    perror("relay: listen");
    return 1;
  }
  for (;;) {
    int frontend = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (frontend < 0) {
      if (errno == EINTR) continue;
      perror("relay: accept");
      return 1;
    }
    relay(frontend, argv[2]);
  }
}
