import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  NET_DEVICE_FEATURES, NetFeature, PROTOCOL_FEATURES, ProtocolFeature, VirtioFeature, featureBit, featureMask,
  featureNames, hasFeature,
} from '../../src/protocol/index.js';

describe('feature bits', () => {
  it('has the spec numbers', () => {
    assert.equal(NetFeature.MRG_RXBUF, 15);
    assert.equal(NetFeature.MQ, 22);
    assert.equal(VirtioFeature.LOG_ALL, 26);
    assert.equal(VirtioFeature.EVENT_IDX, 29);
    assert.equal(VirtioFeature.PROTOCOL_FEATURES, 30);
    assert.equal(VirtioFeature.VERSION_1, 32);
    assert.equal(VirtioFeature.IOMMU_PLATFORM, 33);
    assert.equal(ProtocolFeature.REPLY_ACK, 3);
    assert.equal(ProtocolFeature.BACKEND_REQ, 5);
    assert.equal(ProtocolFeature.CONFIGURE_MEM_SLOTS, 15);
    assert.equal(ProtocolFeature.DEVICE_STATE, 19);
  });

  it('names set bits, preferring the first name and printing unknown bits', () => {
    const bits = featureMask(NetFeature.MAC, VirtioFeature.VERSION_1, VirtioFeature.ACCESS_PLATFORM, 45);
    assert.deepEqual(featureNames(bits, NET_DEVICE_FEATURES), ['MAC', 'VERSION_1', 'ACCESS_PLATFORM', 'bit 45']);
    assert.deepEqual(featureNames(featureMask(3, 5, 10, 40), PROTOCOL_FEATURES), ['REPLY_ACK', 'BACKEND_REQ', 'BACKEND_SEND_FD', 'bit 40']);
    assert.deepEqual(featureNames(0n, PROTOCOL_FEATURES), []);
  });

  it('tests single bits', () => {
    assert.equal(featureBit(63), 0x8000_0000_0000_0000n);
    assert.ok(hasFeature(0x4000_0000n, VirtioFeature.PROTOCOL_FEATURES));
    assert.ok(!hasFeature(0x4000_0000n, VirtioFeature.EVENT_IDX));
  });
});
