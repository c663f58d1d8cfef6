/*
 * LD_PRELOAD shim for dpdk-testpmd's vhost back-end: a lazy guest's INVALIDATEs reach DPDK.
 *
 * A Linux guest with lazy invalidation flushes its whole IOVA space at once, and QEMU 10 sends
 * that flush as INVALIDATE [0, 0xfee00000) and [0xfef00000, 2^64). DPDK's vhost (22.11, and
 * upstream since) computes the end of the second as iova + size in 64 bits, gets 0, and removes
 * nothing from its IOTLB cache (vhost_user_iotlb_cache_remove) nor sees its rings in it
 * (is_vring_iotlb_*): it keeps reading and writing through translations the guest has let go.
 * bench/guest-iommu.ts's `DPDK vhost end-fixed` column runs DPDK's vhost with this shim, so
 * the lazy rows compare serve with a DPDK that honours every INVALIDATE it is sent.
 *
 * What it changes: the payload of a VHOST_USER_IOTLB_MSG whose type is INVALIDATE and whose
 * end wraps past 2^64 gets size = 2^64 - 1 - iova (the last byte of the address space, which
 * no mapping of DPDK's can hold, is all it leaves out). DPDK reads a vhost-user message as a
 * 12-byte header with recvmsg(2) and its payload with read(2) on the same socket
 * (read_vhost_message), so the shim remembers, per fd, that a header announced an IOTLB
 * message and looks at the next read. Every other call passes through untouched. Only DPDK's
 * vhost-events thread reads those sockets, so the per-fd flags need no lock.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#define HEADER 12
#define IOTLB_MSG 22
#define IOTLB_INVALIDATE 3
#define VERSION_MASK 3u
#define VERSION 1u
#define TRACKED_FDS 4096
/* struct vhost_iotlb_msg: iova, size, uaddr (u64 each), perm, type (u8 each). */
#define IOTLB_BODY 26
#define TYPE_AT 25

static ssize_t (*real_recvmsg)(int, struct msghdr *, int);
static ssize_t (*real_read)(int, void *, size_t);
static unsigned char iotlb_body_next[TRACKED_FDS];

ssize_t recvmsg(int fd, struct msghdr *msg, int flags) {
  if (real_recvmsg == NULL) real_recvmsg = (ssize_t (*)(int, struct msghdr *, int))dlsym(RTLD_NEXT, "recvmsg");
  ssize_t n = real_recvmsg(fd, msg, flags);
  if (fd < 0 || fd >= TRACKED_FDS) return n;
  iotlb_body_next[fd] = 0;
  if (n == HEADER && msg->msg_iovlen >= 1 && msg->msg_iov[0].iov_len >= HEADER) {
    uint32_t request, header_flags;
    memcpy(&request, msg->msg_iov[0].iov_base, 4);
    memcpy(&header_flags, (const char *)msg->msg_iov[0].iov_base + 4, 4);
    iotlb_body_next[fd] = request == IOTLB_MSG && (header_flags & VERSION_MASK) == VERSION;
  }
  return n;
}

ssize_t read(int fd, void *buf, size_t count) {
  if (real_read == NULL) real_read = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
  ssize_t n = real_read(fd, buf, count);
  if (fd < 0 || fd >= TRACKED_FDS || !iotlb_body_next[fd]) return n;
  iotlb_body_next[fd] = 0;
  if (n < IOTLB_BODY || ((const uint8_t *)buf)[TYPE_AT] != IOTLB_INVALIDATE) return n;
  uint64_t iova, size;
  memcpy(&iova, buf, 8);
  memcpy(&size, (const char *)buf + 8, 8);
  if (size > UINT64_MAX - iova) {
    size = UINT64_MAX - iova;
    memcpy((char *)buf + 8, &size, 8);
  }
  return n;
}
