/*
 * The C responder of bench/control-rtt.ts: blocks in poll(2) on the socket whose fd is its
 * argument, and answers every request with a 20-byte ack, until the peer closes.
 */
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  int fd = atoi(argv[1]);
  char buf[64], ack[20] = {0};
  struct pollfd p = {fd, POLLIN, 0};
  for (;;) {
    if (poll(&p, 1, -1) < 0) return 1;
    if (recv(fd, buf, sizeof buf, 0) <= 0) return 0;
    send(fd, ack, sizeof ack, 0);
  }
}
