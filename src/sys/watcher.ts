// Readability notifications for fds on the main loop (control path sockets, kick eventfds).
import { native } from './native.js';
import { checkFd, systemError } from './errors.js';

/** fds with an active watcher on this thread (module state is per thread). */
const watched = new Set<number>();

/**
 * A libuv uv_poll_t (UV_READABLE) on the creating thread's event loop. onReadable runs on that
 * loop, through napi_make_callback (so microtasks run after it), as long as the fd stays
 * readable: the poll is level-triggered, so drain the fd or stop(). When libuv reports a poll
 * error (e.g. EBADF after the fd was closed underneath) onReadable gets that Error as its only
 * argument instead; the watcher keeps running until stop(). Throwing from onReadable is an
 * uncaught exception. stop() is idempotent and releases the handle, so a stopped watcher
 * never keeps the process alive; an unstopped one is closed at thread/env teardown.
 * Stop the watcher before closing its fd, and keep one watcher per fd per thread (libuv
 * aborts on two polls of one fd; a second active watcher is refused with code 'EEXIST').
 */
export class FdWatcher {
  private id: number;
  readonly fd: number;

  constructor(fd: number, onReadable: (error?: Error) => void) {
    checkFd('FdWatcher fd', fd);
    if (typeof onReadable !== 'function') throw new TypeError('FdWatcher onReadable must be a function');
    if (watched.has(fd)) throw systemError('uv_poll_init', 'EEXIST', `fd ${fd} already has an active FdWatcher`);
    this.id = native().watchFd(fd, onReadable);
    this.fd = fd;
    watched.add(fd);
  }

  get active(): boolean {
    return this.id !== 0;
  }

  stop(): void {
    if (this.id === 0) return;
    native().unwatchFd(this.id);
    this.id = 0;
    watched.delete(this.fd);
  }
}
