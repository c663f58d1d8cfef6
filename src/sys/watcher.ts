// Readability notifications for fds on the main loop (control path sockets, kick eventfds).
import { native } from './native.js';
import { checkFd } from './errors.js';

/**
 * A libuv uv_poll_t (UV_READABLE) on the creating thread's event loop. onReadable runs on that
 * loop, through napi_make_callback (so microtasks run after it), as long as the fd stays
 * readable: the poll is level-triggered, so drain the fd or stop(). When libuv reports a poll
 * error (e.g. EBADF after the fd was closed underneath) onReadable gets that Error as its only
 * argument instead; the watcher keeps running until stop(). Throwing from onReadable is an
 * uncaught exception. stop() is idempotent and releases the handle, so a stopped watcher
 * never keeps the process alive; an unstopped one is closed at thread/env teardown.
 * Stop the watcher before closing its fd.
 */
export class FdWatcher {
  private id: number;

  constructor(fd: number, onReadable: (error?: Error) => void) {
    checkFd('FdWatcher fd', fd);
    if (typeof onReadable !== 'function') throw new TypeError('FdWatcher onReadable must be a function');
    this.id = native().watchFd(fd, onReadable);
  }

  get active(): boolean {
    return this.id !== 0;
  }

  stop(): void {
    if (this.id === 0) return;
    native().unwatchFd(this.id);
    this.id = 0;
  }
}
