// Independent little-endian byte assembler for the tests: it knows nothing of the codec,
// so a layout mistake in src/protocol cannot hide behind the same mistake here.
export class Bytes {
  private parts: number[] = [];

  u8(v: number): this {
    this.parts.push(v & 0xff);
    return this;
  }
  u16(v: number): this {
    const dv = new DataView(new ArrayBuffer(2));
    dv.setUint16(0, v, true);
    return this.raw(new Uint8Array(dv.buffer));
  }
  u32(v: number): this {
    const dv = new DataView(new ArrayBuffer(4));
    dv.setUint32(0, v, true);
    return this.raw(new Uint8Array(dv.buffer));
  }
  u64(v: bigint): this {
    const dv = new DataView(new ArrayBuffer(8));
    dv.setBigUint64(0, v, true);
    return this.raw(new Uint8Array(dv.buffer));
  }
  pad(n: number): this {
    for (let i = 0; i < n; i++) this.parts.push(0);
    return this;
  }
  raw(bytes: Uint8Array): this {
    this.parts.push(...bytes);
    return this;
  }
  build(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

export const b = (): Bytes => new Bytes();

/** A whole message: 12-byte header then payload. */
export function frame(request: number, flags: number, payload: Uint8Array, sizeOverride?: number): Uint8Array {
  return b().u32(request).u32(flags).u32(sizeOverride ?? payload.length).raw(payload).build();
}
