// An IotlbOpSink that writes down what reached it, one line per operation, for tests of the
// threads that move IOTLB operations (the lent-socket fast path, the reader thread).
import type { IotlbOpSink } from '../../src/datapath/iotlb-ring.js';

export class RecordingSink implements IotlbOpSink {
  readonly ops: string[] = [];
  update(iova: number, size: number, uaddr: number, perm: number): void {
    this.ops.push(`update ${iova.toString(16)}+${size.toString(16)} -> ${uaddr.toString(16)} perm ${perm}`);
  }
  invalidate(iova: number, size: number): void {
    this.ops.push(`invalidate ${iova.toString(16)}+${size.toString(16)}`);
  }
}
