// Public surface of the native syscall layer.
export { listenUnix, connectUnix, acceptUnix, socketPair, sendMessage, receiveMessage, MAX_FDS, MAX_PATH_BYTES } from './socket.js';
export type { Received } from './socket.js';
export { mapFd, unmap, memfdCreate, pageSize } from './memory.js';
export {
  eventfdCreate,
  eventfdRead,
  eventfdWrite,
  closeFd,
  readFd,
  writeFd,
  writevFd,
  WRITEV_MAX_PIECES,
  pollReadable,
  memoryFence,
  yieldCpu,
  setThreadAffinity,
  fdKind,
  openFdCount,
} from './fd.js';
export type { FdKindName } from './fd.js';
export { openTap, setInterfaceMtu, setTapOffload } from './tap.js';
export { FdWatcher } from './watcher.js';
export { systemError } from './errors.js';
export type { SystemError } from './errors.js';
