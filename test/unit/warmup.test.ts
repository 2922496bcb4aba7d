/**
 * The media warm-up (main/media/warmup.ts, issue 13 item 4) runs the real
 * werift path on loopback — offer/answer, ICE, DTLS with the SRTP key
 * binding, one SRTP packet each way.
 */
import { describe, expect, it } from 'vitest';
import { warmUpMediaPath } from '../../main/media/warmup';

describe('warmUpMediaPath', () => {
  it('connects two loopback peers, carries RTP both ways and runs the encoder once', async () => {
    let encoded = 0;
    const r = await warmUpMediaPath({ ptimeMs: 20, encode: () => void encoded++ });
    expect(r.ms).toBeGreaterThan(0);
    expect(encoded).toBe(1);
  });

  it('fails with a clear error (and does not hang) when the peers cannot connect in time', async () => {
    await expect(warmUpMediaPath({ ptimeMs: 20, timeoutMs: 1 })).rejects.toThrow(/within|did not connect|connect/);
  });
});
