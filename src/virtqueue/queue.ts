/**
 * The device-side virtqueue contract the virtio-net layer (net/virtio-net.ts) and the queue-pair
 * runtime use, implemented by SplitQueue (split.ts) and PackedQueue (packed.ts).
 *
 * A data-path worker builds only one kind (the layout is negotiated per device, and a
 * worker is created after SET_FEATURES), so every call through this interface in a
 * worker sees one class: V8 keeps those sites monomorphic and inlines them, and the
 * split hot path costs what it did when net/virtio-net.ts named SplitQueue directly.
 */
import type { DirtyLog } from '../memory/dirty-log.js';
import type { AddressSpace } from '../memory/address-space.js';
import type { ScatterList } from './scatter.js';
import type { BufferRun } from './buffer-run.js';

export interface VirtQueueConfig {
  size: number;
  descAddr: number;
  /** Split: avail ring. Packed: driver event suppression area. */
  availAddr: number;
  /** Split: used ring. Packed: device event suppression area. */
  usedAddr: number;
  /** Translates the three ring addresses (front-end VAs without IOMMU, IOVAs with). */
  ringSpace: AddressSpace;
  /** Translates descriptor addresses (GPAs without IOMMU, IOVAs with). */
  dataSpace: AddressSpace;
  eventIdx: boolean;
  /** The vhost-user ring base (SET_VRING_BASE num; packed: see PackedQueueConfig). */
  lastAvailIdx: number;
}

export interface VirtQueue {
  /** Which ring layout (virtio 1.2 2.7 / 2.8): for the few choices measured to differ between them. */
  readonly layout: 'split' | 'packed';
  readonly size: number;
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  ready: boolean;
  /** Split: where the ring resumed when used->idx disagreed with its base at start (SplitQueue.checkResume); else null. */
  resumedAt: { given: number; used: number } | null;
  error: string;
  broken: boolean;
  brokenReason: string;
  /** IOVA and access the IOTLB refused (the queue then broke), or -1. */
  deniedAddr: number;
  deniedAccess: number;
  missPending: boolean;
  /** The dirty-page log while a migration is under way, else null (chain.ts logRingWrites). */
  log: DirtyLog | null;
  missAddr: number;
  missLen: number;
  missAccess: number;
  /** While set, a walk hands each device-readable miss here and goes on (chain.ts). */
  missSink: ((addr: number, access: number) => boolean) | null;
  chainHead: number;
  chainReadLen: number;
  chainWriteLen: number;
  chainDescs: number;
  chainFirst: number;
  /** For inspect (packed: position | wrap << 15). */
  lastAvailIdx: number;
  availIdx: number;
  usedIdx: number;

  configure(cfg: VirtQueueConfig): number;
  mapRings(): number;
  unmapRings(): void;
  ringsOverlap(addr: number, len: number): boolean;
  clearMiss(): void;
  fail(reason: string): number;
  availableCount(): number;
  knownAvailable(): number;
  walkChain(ahead: number, sg: ScatterList): number;
  /** The common one-descriptor chain without a scatter list (SplitQueue.mapSingle says how). */
  mapSingle(ahead: number, access: number, minLen: number): number;
  /** After mapSingle() returned SINGLE_REST: walkChain()'s result for that chain. */
  walkSingle(sg: ScatterList): number;
  /** Where mapSingle() leaves the buffer (bytes / wide / offset of its last map()). */
  readonly dataSpace: AddressSpace | null;
  consume(n: number): void;
  pushUsed(id: number, len: number): void;
  /**
   * Reserves, from the next chain to consume, up to max chains that are each one direct
   * descriptor with `access` and at least minLen bytes (a writable one translated through an
   * IOTLB for its first minLen bytes only: chain.ts writableSpan), inside a window of the data space
   * (AddressSpace.window: a region, or an IOTLB span an earlier lookup vouched for) and all
   * in one region (run.bytes), into run.ids / run.offsets; returns how many. Stops at the first chain that is anything else, or outside every
   * window (a trace records each translation, so it has none): that chain takes the
   * general path (mapSingle / walkChain), which looks it up and reports its miss or fault.
   * Consumes nothing.
   */
  reserveRun(max: number, access: number, minLen: number, run: BufferRun): number;
  /**
   * Completes the first k chains of the last reserveRun() with lengths run.used[0..k) and
   * consumes them (pushUsed + consume); their translations count in the data space's
   * statistics now, as map() would have counted them. Like pushUsed(), it shows the driver
   * nothing until flushUsed(), so the buffers may still be written in between.
   */
  completeRun(run: BufferRun, k: number): void;
  flushUsed(): number;
  needsInterrupt(): boolean;
  disableNotifications(): void;
  enableNotifications(): number;
  readUsedEvent(): number;
  /** The value GET_VRING_BASE returns once the ring is stopped. */
  vringBase(): number;
}
