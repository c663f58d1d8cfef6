// Thin syscall layer for vhost-iotlb. Node cannot pass fds over Unix sockets,
// mmap them, or poll an fd from a worker, so those calls live here. Argument
// validation and policy live in src/sys/*.ts; this file trusts its caller for
// types and ranges and only turns errno into a Node-style Error.
//
// Conventions: EAGAIN/EWOULDBLOCK is a value (-1 or null), never an exception;
// EINTR is retried; any other errno throws Error{code, errno, syscall}.

#include <napi.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <mutex>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <string>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <unordered_map>
#include <vector>

namespace {

constexpr int kMaxRecvFds = 253;  // SCM_MAX_FD in the kernel

// Builds "syscall: Message (CODE)" with code/errno/syscall like Node's own errors,
// except that errno is positive (what the brief asks for).
Napi::Error ErrnoError(Napi::Env env, const char* syscall, int err) {
  char buf[256];
  const char* text = strerror_r(err, buf, sizeof buf);  // GNU variant
  const char* code = uv_err_name(-err);
  std::string message = std::string(syscall) + ": " + text + " (" + code + ")";
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  error.Set("errno", Napi::Number::New(env, err));
  error.Set("syscall", Napi::String::New(env, syscall));
  return error;
}

[[noreturn]] void ThrowErrno(Napi::Env env, const char* syscall, int err) {
  throw ErrnoError(env, syscall, err);
}

bool IsAgain(int err) { return err == EAGAIN || err == EWOULDBLOCK; }

int FdArg(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().Int32Value(); }

size_t SizeArg(const Napi::CallbackInfo& info, size_t i) {
  return static_cast<size_t>(info[i].As<Napi::Number>().Int64Value());
}

// Byte span of a Uint8Array argument at [offset, offset+length), range-checked in TS.
uint8_t* BytesArg(const Napi::CallbackInfo& info, size_t i) {
  Napi::Uint8Array array = info[i].As<Napi::Uint8Array>();
  return array.Data();
}

sockaddr_un UnixAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), std::min(path.size(), sizeof addr.sun_path - 1));
  return addr;
}

void SetNonBlocking(Napi::Env env, int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, "fcntl", err);
  }
}

// ---- mappings ---------------------------------------------------------------

// One record per live mmap. The finalizer owns the record; unmap() only flips
// `unmapped`, so a finalizer that runs after an explicit unmap does not munmap
// an address range that may since have been reused.
struct Mapping {
  void* addr;
  size_t length;
  bool unmapped;
};

// Mappings are keyed by address so unmap(buffer) can find its record. Global
// (not per env) because worker threads map memory too; guarded by a mutex.
std::mutex g_mappings_mutex;
std::unordered_map<void*, Mapping*> g_mappings;

void FinalizeMapping(napi_env, void*, void* hint) {
  Mapping* mapping = static_cast<Mapping*>(hint);
  {
    std::lock_guard<std::mutex> lock(g_mappings_mutex);
    if (!mapping->unmapped) {
      auto it = g_mappings.find(mapping->addr);
      if (it != g_mappings.end() && it->second == mapping) g_mappings.erase(it);
      munmap(mapping->addr, mapping->length);
    }
  }
  delete mapping;
}

// ---- fd watchers --------------------------------------------------------------

// A uv_poll_t on the env's loop. Its memory is freed in the uv_close callback,
// which is reached either from unwatchFd() or from the env's async cleanup hook.
struct Watch {
  uv_poll_t poll;
  napi_env env;
  uint32_t id;
  Napi::FunctionReference callback;
  napi_async_context context = nullptr;
  napi_async_cleanup_hook_handle cleanup = nullptr;
  bool closing = false;
  class VhostSys* owner;
};

class VhostSys : public Napi::Addon<VhostSys> {
 public:
  VhostSys(Napi::Env env, Napi::Object exports) {
    DefineAddon(exports, {
        InstanceMethod("listenUnix", &VhostSys::ListenUnix),
        InstanceMethod("connectUnix", &VhostSys::ConnectUnix),
        InstanceMethod("acceptUnix", &VhostSys::AcceptUnix),
        InstanceMethod("socketPair", &VhostSys::SocketPair),
        InstanceMethod("sendMessage", &VhostSys::SendMessage),
        InstanceMethod("receiveMessage", &VhostSys::ReceiveMessage),
        InstanceMethod("mapFd", &VhostSys::MapFd),
        InstanceMethod("unmap", &VhostSys::Unmap),
        InstanceMethod("memfdCreate", &VhostSys::MemfdCreate),
        InstanceMethod("eventfdCreate", &VhostSys::EventfdCreate),
        InstanceMethod("eventfdRead", &VhostSys::EventfdRead),
        InstanceMethod("eventfdWrite", &VhostSys::EventfdWrite),
        InstanceMethod("closeFd", &VhostSys::CloseFd),
        InstanceMethod("readFd", &VhostSys::ReadFd),
        InstanceMethod("writeFd", &VhostSys::WriteFd),
        InstanceMethod("writevFd", &VhostSys::WritevFd),
        InstanceMethod("pollReadable", &VhostSys::PollReadable),
        InstanceMethod("memoryFence", &VhostSys::MemoryFence),
        InstanceMethod("yieldCpu", &VhostSys::YieldCpu),
        InstanceMethod("setThreadAffinity", &VhostSys::SetThreadAffinity),
        InstanceMethod("openTap", &VhostSys::OpenTap),
        InstanceMethod("setTapOffload", &VhostSys::SetTapOffload),
        InstanceMethod("setInterfaceMtu", &VhostSys::SetInterfaceMtu),
        InstanceMethod("watchFd", &VhostSys::WatchFd),
        InstanceMethod("unwatchFd", &VhostSys::UnwatchFd),
        InstanceValue("pageSize", Napi::Number::New(env, static_cast<double>(sysconf(_SC_PAGESIZE)))),
    });
  }

  void ForgetWatch(uint32_t id) { watches_.erase(id); }

 private:
  std::unordered_map<uint32_t, Watch*> watches_;
  uint32_t next_watch_id_ = 1;

  // listenUnix(path, backlog) -> fd. Stale-file handling is done in TS.
  Napi::Value ListenUnix(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = info[0].As<Napi::String>().Utf8Value();
    int backlog = info[1].As<Napi::Number>().Int32Value();
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) ThrowErrno(env, "socket", errno);
    sockaddr_un addr = UnixAddress(path);
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
      int err = errno;
      close(fd);
      ThrowErrno(env, "bind", err);
    }
    if (listen(fd, backlog) < 0) {
      int err = errno;
      close(fd);
      ThrowErrno(env, "listen", err);
    }
    return Napi::Number::New(env, fd);
  }

  // connectUnix(path) -> fd: blocking connect (Unix sockets connect at once or
  // fail), then O_NONBLOCK for the caller's event loop.
  Napi::Value ConnectUnix(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = info[0].As<Napi::String>().Utf8Value();
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) ThrowErrno(env, "socket", errno);
    sockaddr_un addr = UnixAddress(path);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) {
      int err = errno;
      if (err == EINTR) {
        // The connect goes on in the background; wait for it and fetch its result.
        pollfd p{fd, POLLOUT, 0};
        while (poll(&p, 1, -1) < 0 && errno == EINTR) {
        }
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
      }
      if (err != 0) {
        close(fd);
        ThrowErrno(env, "connect", err);
      }
    }
    SetNonBlocking(env, fd);
    return Napi::Number::New(env, fd);
  }

  Napi::Value AcceptUnix(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int listen_fd = FdArg(info, 0);
    for (;;) {
      int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) return Napi::Number::New(env, fd);
      int err = errno;
      // A peer that gave up before we accepted is not the listener's failure.
      if (err == EINTR || err == ECONNABORTED) continue;
      if (IsAgain(err)) return Napi::Number::New(env, -1);
      ThrowErrno(env, "accept4", err);
    }
  }

  Napi::Value SocketPair(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
      ThrowErrno(env, "socketpair", errno);
    Napi::Array pair = Napi::Array::New(env, 2);
    pair.Set(0u, Napi::Number::New(env, fds[0]));
    pair.Set(1u, Napi::Number::New(env, fds[1]));
    return pair;
  }

  // sendMessage(fd, bytes, offset, length, fds: number[]) -> sent | -1
  Napi::Value SendMessage(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = FdArg(info, 0);
    uint8_t* data = BytesArg(info, 1) + SizeArg(info, 2);
    size_t length = SizeArg(info, 3);
    Napi::Array fd_list = info[4].As<Napi::Array>();
    uint32_t count = fd_list.Length();

    iovec iov{data, length};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
    if (count > 0) {
      // TS caps count at 8; the buffer above is sized for exactly that.
      if (count > 8) throw Napi::RangeError::New(env, "sendMessage: at most 8 fds");
      std::memset(control, 0, sizeof control);
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);
      cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int) * count);
      int* out = reinterpret_cast<int*>(CMSG_DATA(cmsg));
      for (uint32_t i = 0; i < count; i++) out[i] = fd_list.Get(i).As<Napi::Number>().Int32Value();
    }
    for (;;) {
      ssize_t sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
      if (sent >= 0) return Napi::Number::New(env, static_cast<double>(sent));
      int err = errno;
      if (err == EINTR) continue;
      if (IsAgain(err)) return Napi::Number::New(env, -1);
      ThrowErrno(env, "sendmsg", err);
    }
  }

  // receiveMessage(fd, bytes, offset, length, maxFds, meta) -> bytes read (0: EOF), or -1 on
  // EAGAIN. meta (Int32Array of 2 + kMaxRecvFds): [0] fds received, [1] 1 if the kernel
  // truncated them, [2..] the fds. No object per call: every control message comes here.
  // The caller closes the fds and throws when truncated.
  Napi::Value ReceiveMessage(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = FdArg(info, 0);
    uint8_t* data = BytesArg(info, 1) + SizeArg(info, 2);
    size_t length = SizeArg(info, 3);
    int max_fds = info[4].As<Napi::Number>().Int32Value();
    if (max_fds < 0 || max_fds > kMaxRecvFds) throw Napi::RangeError::New(env, "receiveMessage: bad maxFds");
    Napi::Int32Array meta_array = info[5].As<Napi::Int32Array>();
    if (meta_array.ElementLength() < static_cast<size_t>(2 + kMaxRecvFds)) throw Napi::RangeError::New(env, "receiveMessage: meta too short");
    int32_t* meta = meta_array.Data();

    iovec iov{data, length};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxRecvFds)];
    if (max_fds > 0) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * max_fds);
    }
    ssize_t got;
    for (;;) {
      got = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
      if (got >= 0) break;
      int err = errno;
      if (err == EINTR) continue;
      if (IsAgain(err)) return Napi::Number::New(env, -1);
      ThrowErrno(env, "recvmsg", err);
    }
    int32_t n = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int* in = reinterpret_cast<const int*>(CMSG_DATA(c));
      for (size_t i = 0; i < count; i++) {
        int received;
        std::memcpy(&received, in + i, sizeof received);
        if (n < kMaxRecvFds) {
          meta[2 + n++] = received;
        } else {
          close(received);  // cannot happen: the control buffer holds at most kMaxRecvFds
        }
      }
    }
    meta[0] = n;
    meta[1] = (msg.msg_flags & MSG_CTRUNC) != 0 ? 1 : 0;
    return Napi::Number::New(env, static_cast<double>(got));
  }

  // mapFd(fd, offset, length, writable) -> external ArrayBuffer over MAP_SHARED memory.
  Napi::Value MapFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = FdArg(info, 0);
    off_t offset = static_cast<off_t>(info[1].As<Napi::Number>().Int64Value());
    size_t length = SizeArg(info, 2);
    bool writable = info[3].As<Napi::Boolean>().Value();
    int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    void* addr = mmap(nullptr, length, prot, MAP_SHARED, fd, offset);
    if (addr == MAP_FAILED) ThrowErrno(env, "mmap", errno);
    Mapping* mapping = new Mapping{addr, length, false};
    {
      // Registered before the buffer exists: the finalizer may run inside a failed create.
      std::lock_guard<std::mutex> lock(g_mappings_mutex);
      g_mappings[addr] = mapping;
    }
    napi_value buffer;
    napi_status status = napi_create_external_arraybuffer(env, addr, length, FinalizeMapping, mapping, &buffer);
    if (status != napi_ok) {
      // Node owns `mapping` now and runs FinalizeMapping (now or later); unmap here only if
      // it has not run yet, and leave it just the delete.
      {
        std::lock_guard<std::mutex> lock(g_mappings_mutex);
        auto it = g_mappings.find(addr);
        if (it != g_mappings.end() && it->second == mapping) {
          g_mappings.erase(it);
          munmap(addr, length);
          mapping->unmapped = true;
        }
      }
      // Node 20 builds external ArrayBuffers through Buffer, capped at buffer.constants.MAX_LENGTH.
      if (env.IsExceptionPending()) throw env.GetAndClearPendingException();
      throw Napi::Error::New(env, "mapFd: cannot create external ArrayBuffer");
    }
    return Napi::Value(env, buffer);
  }

  // unmap(buffer): munmap now and detach. Already-detached buffers are a no-op.
  Napi::Value Unmap(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::ArrayBuffer buffer = info[0].As<Napi::ArrayBuffer>();
    if (buffer.IsDetached()) return env.Undefined();
    void* addr = buffer.Data();
    {
      std::lock_guard<std::mutex> lock(g_mappings_mutex);
      auto it = g_mappings.find(addr);
      if (it == g_mappings.end() || it->second->length != buffer.ByteLength())
        throw Napi::TypeError::New(env, "unmap: buffer was not returned by mapFd");
      // Detach first: if that fails the memory must stay mapped.
      buffer.Detach();
      Mapping* mapping = it->second;
      munmap(mapping->addr, mapping->length);
      mapping->unmapped = true;
      g_mappings.erase(it);
    }
    return env.Undefined();
  }

  Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = info[0].As<Napi::String>().Utf8Value();
    off_t size = static_cast<off_t>(info[1].As<Napi::Number>().Int64Value());
    int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
    if (fd < 0) ThrowErrno(env, "memfd_create", errno);
    if (ftruncate(fd, size) < 0) {
      int err = errno;
      close(fd);
      ThrowErrno(env, "ftruncate", err);
    }
    return Napi::Number::New(env, fd);
  }

  Napi::Value EventfdCreate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    unsigned int initial = info[0].As<Napi::Number>().Uint32Value();
    int fd = eventfd(initial, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) ThrowErrno(env, "eventfd", errno);
    return Napi::Number::New(env, fd);
  }

  Napi::Value EventfdRead(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = FdArg(info, 0);
    uint64_t value = 0;
    for (;;) {
      ssize_t got = read(fd, &value, sizeof value);
      if (got == sizeof value) return Napi::Number::New(env, static_cast<double>(value));
      if (got >= 0) ThrowErrno(env, "read", EIO);  // eventfds never short-read
      int err = errno;
      if (err == EINTR) continue;
      if (IsAgain(err)) return Napi::Number::New(env, 0);
      ThrowErrno(env, "read", err);
    }
  }

  Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = FdArg(info, 0);
    uint64_t value = static_cast<uint64_t>(info[1].As<Napi::Number>().Int64Value());
    for (;;) {
      ssize_t put = write(fd, &value, sizeof value);
      if (put == sizeof value) return env.Undefined();
      if (put >= 0) ThrowErrno(env, "write", EIO);
      int err = errno;
      if (err == EINTR) continue;
      ThrowErrno(env, "write", err);  // EAGAIN here means the counter would overflow
    }
  }

  Napi::Value CloseFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    // On Linux the fd is released even when close() reports EINTR, so never retry.
    if (close(FdArg(info, 0)) < 0 && errno != EINTR) ThrowErrno(env, "close", errno);
    return env.Undefined();
  }

  Napi::Value ReadFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = FdArg(info, 0);
    uint8_t* data = BytesArg(info, 1) + SizeArg(info, 2);
    size_t length = SizeArg(info, 3);
    for (;;) {
      ssize_t got = read(fd, data, length);
      if (got >= 0) return Napi::Number::New(env, static_cast<double>(got));
      int err = errno;
      if (err == EINTR) continue;
      if (IsAgain(err)) return Napi::Number::New(env, -1);
      ThrowErrno(env, "read", err);
    }
  }

  Napi::Value WriteFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = FdArg(info, 0);
    const uint8_t* data = BytesArg(info, 1) + SizeArg(info, 2);
    size_t length = SizeArg(info, 3);
    for (;;) {
      ssize_t put = write(fd, data, length);
      if (put >= 0) return Napi::Number::New(env, static_cast<double>(put));
      int err = errno;
      if (err == EINTR) continue;
      if (IsAgain(err)) return Napi::Number::New(env, -1);
      ThrowErrno(env, "write", err);
    }
  }

  // writevFd(fd, head: Uint8Array, headLength, pieces: Uint8Array[], offsets: Uint32Array,
  // lengths: Uint32Array, first, end) -> bytes written, -1 on EAGAIN. One writev(2) of head
  // then pieces[first..end) (a scatter list's parallel arrays), so a frame in guest memory
  // reaches a tap without a copy of ours. Each piece is bounds-checked against its array
  // here (cheap beside the syscall); the arrays' lengths and the range are checked in TS.
  // The iovec array is thread-local and only grows: steady-state calls do not allocate.
  Napi::Value WritevFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = FdArg(info, 0);
    Napi::Uint8Array head = info[1].As<Napi::Uint8Array>();
    size_t headLength = SizeArg(info, 2);
    Napi::Array pieces = info[3].As<Napi::Array>();
    const uint32_t* offsets = info[4].As<Napi::Uint32Array>().Data();
    const uint32_t* lengths = info[5].As<Napi::Uint32Array>().Data();
    size_t first = SizeArg(info, 6);
    size_t end = SizeArg(info, 7);
    thread_local std::vector<iovec> iov;
    if (iov.size() < end - first + 1) iov.resize(end - first + 1);
    iov[0] = iovec{head.Data(), headLength};
    size_t n = 1;
    for (size_t i = first; i < end; i++) {
      Napi::Value value = pieces[static_cast<uint32_t>(i)];
      if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
        throw Napi::TypeError::New(env, "writevFd: piece " + std::to_string(i) + " is not a Uint8Array");
      }
      Napi::Uint8Array bytes = value.As<Napi::Uint8Array>();
      if (static_cast<size_t>(offsets[i]) + lengths[i] > bytes.ByteLength()) {
        throw Napi::RangeError::New(env, "writevFd: piece " + std::to_string(i) + " runs past its array");
      }
      iov[n++] = iovec{bytes.Data() + offsets[i], lengths[i]};
    }
    for (;;) {
      ssize_t put = writev(fd, iov.data(), static_cast<int>(n));
      if (put >= 0) return Napi::Number::New(env, static_cast<double>(put));
      int err = errno;
      if (err == EINTR) continue;
      if (IsAgain(err)) return Napi::Number::New(env, -1);
      ThrowErrno(env, "writev", err);
    }
  }

  // pollReadable(fds: Int32Array, count, timeoutMs, ready: Uint8Array) -> number ready.
  // Blocks the calling thread; meant for data-path workers. The pollfd array is
  // thread-local and only grows, so steady-state calls do not allocate.
  Napi::Value PollReadable(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Int32Array fds = info[0].As<Napi::Int32Array>();
    size_t count = SizeArg(info, 1);
    int timeout = info[2].As<Napi::Number>().Int32Value();
    uint8_t* ready = BytesArg(info, 3);
    thread_local std::vector<pollfd> polls;
    if (polls.size() < count) polls.resize(count);
    const int32_t* in = fds.Data();
    for (size_t i = 0; i < count; i++) polls[i] = pollfd{in[i], POLLIN, 0};

    timespec start{};
    clock_gettime(CLOCK_MONOTONIC, &start);
    int n;
    for (;;) {
      n = poll(polls.data(), count, timeout);
      if (n >= 0) break;
      int err = errno;
      if (err != EINTR) ThrowErrno(env, "poll", err);
      if (timeout > 0) {
        timespec now{};
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        timeout = elapsed >= timeout ? 0 : timeout - static_cast<int>(elapsed);
        start = now;
      }
    }
    // HUP/ERR count as readable: the following read reports EOF or the error.
    for (size_t i = 0; i < count; i++) ready[i] = (polls[i].revents & (POLLIN | POLLHUP | POLLERR)) ? 1 : 0;
    return Napi::Number::New(env, n);
  }

  Napi::Value MemoryFence(const Napi::CallbackInfo& info) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return info.Env().Undefined();
  }

  // yieldCpu(): sched_yield(2) for the calling thread.
  Napi::Value YieldCpu(const Napi::CallbackInfo& info) {
    sched_yield();
    return info.Env().Undefined();
  }

  // setThreadAffinity(tid, cpus[]): sched_setaffinity(2) of one thread (tid 0: the calling one).
  Napi::Value SetThreadAffinity(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    pid_t tid = static_cast<pid_t>(info[0].As<Napi::Number>().Int32Value());
    Napi::Array list = info[1].As<Napi::Array>();
    cpu_set_t set;
    CPU_ZERO(&set);
    for (uint32_t i = 0; i < list.Length(); i++) {
      int cpu = list.Get(i).As<Napi::Number>().Int32Value();
      if (cpu >= 0 && cpu < CPU_SETSIZE) CPU_SET(cpu, &set);
    }
    if (sched_setaffinity(tid, sizeof(set), &set) != 0) ThrowErrno(env, "sched_setaffinity", errno);
    return env.Undefined();
  }

  // openTap(name, vnetHdr, multiQueue) -> { fd, name } with the name the kernel chose.
  Napi::Value OpenTap(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = info[0].As<Napi::String>().Utf8Value();
    bool vnet_hdr = info[1].As<Napi::Boolean>().Value();
    bool multi_queue = info.Length() > 2 && info[2].As<Napi::Boolean>().Value();
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) ThrowErrno(env, "open", errno);
    ifreq ifr{};
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet_hdr ? IFF_VNET_HDR : 0) | (multi_queue ? IFF_MULTI_QUEUE : 0);
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
      int err = errno;
      close(fd);
      ThrowErrno(env, "ioctl", err);
    }
    Napi::Object result = Napi::Object::New(env);
    result.Set("fd", Napi::Number::New(env, fd));
    result.Set("name", Napi::String::New(env, ifr.ifr_name));
    return result;
  }

  // setTapOffload(fd, vnetHdrSize, offloadFlags): TUNSETVNETHDRSZ then TUNSETOFFLOAD (TUN_F_*).
  Napi::Value SetTapOffload(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = FdArg(info, 0);
    int size = info[1].As<Napi::Number>().Int32Value();
    unsigned int flags = info[2].As<Napi::Number>().Uint32Value();
    if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) ThrowErrno(env, "ioctl TUNSETVNETHDRSZ", errno);
    if (ioctl(fd, TUNSETOFFLOAD, flags) < 0) ThrowErrno(env, "ioctl TUNSETOFFLOAD", errno);
    return env.Undefined();
  }

  // setInterfaceMtu(name, mtu): SIOCSIFMTU through a throwaway datagram socket.
  Napi::Value SetInterfaceMtu(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string name = info[0].As<Napi::String>().Utf8Value();
    int mtu = info[1].As<Napi::Number>().Int32Value();
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) ThrowErrno(env, "socket", errno);
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    ifr.ifr_mtu = mtu;
    if (ioctl(s, SIOCSIFMTU, &ifr) < 0) {
      int err = errno;
      close(s);
      ThrowErrno(env, "ioctl SIOCSIFMTU", err);
    }
    close(s);
    return env.Undefined();
  }

  // watchFd(fd, callback) -> id. The callback runs on this env's loop thread with
  // no argument when readable, or with an Error when libuv reports a poll error.
  Napi::Value WatchFd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int fd = FdArg(info, 0);
    Napi::Function callback = info[1].As<Napi::Function>();
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "watchFd: no event loop");

    Watch* watch = new Watch();
    watch->env = env;
    watch->owner = this;
    int rc = uv_poll_init(loop, &watch->poll, fd);
    if (rc < 0) {
      delete watch;
      ThrowErrno(env, "uv_poll_init", -rc);
    }
    watch->poll.data = watch;
    rc = uv_poll_start(&watch->poll, UV_READABLE, OnPoll);
    if (rc < 0) {
      uv_close(reinterpret_cast<uv_handle_t*>(&watch->poll), OnFreeUnregistered);
      ThrowErrno(env, "uv_poll_start", -rc);
    }
    watch->callback = Napi::Persistent(callback);
    napi_async_init(env, nullptr, Napi::String::New(env, "vhost_sys:FdWatcher"), &watch->context);
    napi_add_async_cleanup_hook(env, OnEnvCleanup, watch, &watch->cleanup);
    watch->id = next_watch_id_++;
    watches_[watch->id] = watch;
    return Napi::Number::New(env, watch->id);
  }

  // unwatchFd(id): unknown or already-stopped ids are a no-op.
  Napi::Value UnwatchFd(const Napi::CallbackInfo& info) {
    uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    auto it = watches_.find(id);
    if (it != watches_.end()) BeginClose(it->second);
    return info.Env().Undefined();
  }

  static void OnPoll(uv_poll_t* handle, int status, int) {
    Watch* watch = static_cast<Watch*>(handle->data);
    if (watch->closing) return;
    Napi::Env env(watch->env);
    Napi::HandleScope scope(env);
    try {
      std::vector<napi_value> args;
      if (status < 0) args.push_back(ErrnoError(env, "uv_poll", -status).Value());
      watch->callback.MakeCallback(env.Global(), args, watch->context);  // recv must be an object
    } catch (const Napi::Error& error) {
      // Same as an exception thrown from any other loop callback.
      napi_fatal_exception(env, error.Value());
    }
  }

  static void BeginClose(Watch* watch) {
    if (watch->closing) return;
    watch->closing = true;
    watch->owner->ForgetWatch(watch->id);
    uv_poll_stop(&watch->poll);
    uv_close(reinterpret_cast<uv_handle_t*>(&watch->poll), OnClosed);
  }

  static void OnEnvCleanup(napi_async_cleanup_hook_handle, void* arg) {
    Watch* watch = static_cast<Watch*>(arg);
    BeginClose(watch);
  }

  static void OnClosed(uv_handle_t* handle) {
    Watch* watch = static_cast<Watch*>(handle->data);
    napi_async_destroy(watch->env, watch->context);
    watch->callback.Reset();
    napi_remove_async_cleanup_hook(watch->cleanup);
    delete watch;
  }

  static void OnFreeUnregistered(uv_handle_t* handle) { delete static_cast<Watch*>(handle->data); }
};

}  // namespace

NODE_API_ADDON(VhostSys)
