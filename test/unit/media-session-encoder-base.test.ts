/**
 * The send rate controller inside MediaSession returns the encoder to the
 * bitrate it was configured with after a lossy spell (issue 13 item 5: it used
 * to come back at a constant 32 kb/s, whatever the user had set).
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { MediaSession, type AudioSink, type AudioSource } from '../../main/media/media-session';
import type { RtpTransport } from '../../main/media/rtp-transport';

type Report = { ssrc: number; fractionLost: number; jitter: number };

function session(encoderSettings?: { bitrate: number; expectedLossPercent: number }) {
  let clock = 0;
  let rtcp: ((block: Report, rttMs: number | undefined) => void) | undefined;
  const peer: RtpTransport = {
    sendRtp: () => undefined,
    onRtp: () => undefined,
    onReceiverReport: (l) => (rtcp = l),
  };
  const source = Object.assign(new EventEmitter(), { start: () => undefined, close: async () => undefined }) as unknown as AudioSource;
  const sink = Object.assign(new EventEmitter(), { start: () => undefined, close: async () => undefined }) as unknown as AudioSink;
  const bitrates: number[] = [];
  const media = new MediaSession(peer, {
    frameMs: 20,
    source,
    sink,
    encoder: {
      encode: () => Buffer.alloc(0),
      setBitrate: (bps) => bitrates.push(bps),
      ...(encoderSettings ? { settings: encoderSettings } : {}),
    },
    decoder: { decode: () => new Int16Array(960) },
    now: () => clock,
  });
  media.start();
  /** One receiver report a second with `lossPercent` of our packets lost, for `seconds`. */
  const reports = (lossPercent: number, seconds: number) => {
    for (let s = 0; s < seconds; s++) {
      clock += 1000;
      rtcp!({ ssrc: 7, fractionLost: Math.round((lossPercent / 100) * 256), jitter: 0 }, undefined);
    }
  };
  return { media, bitrates, reports };
}

describe('MediaSession: the encoder after loss', () => {
  const table = [
    { name: 'a configured 48 kb/s comes back as 48 kb/s', settings: { bitrate: 48_000, expectedLossPercent: 10 }, back: 48_000 },
    { name: 'a configured 20 kb/s comes back as 20 kb/s (never raised)', settings: { bitrate: 20_000, expectedLossPercent: 10 }, back: 20_000 },
    { name: 'an encoder that does not say falls back to 32 kb/s', settings: undefined, back: 32_000 },
  ];
  for (const row of table) {
    it(row.name, async () => {
      const { media, bitrates, reports } = session(row.settings);
      reports(30, 5); // 30 % loss: the controller steps down
      expect(Math.min(...bitrates)).toBeLessThanOrEqual(24_000);
      reports(0, 40); // a clean path: it steps back up, 10 s per level
      expect(bitrates.at(-1)).toBe(row.back);
      expect(media.stats().bitrate).toBe(row.back);
      await media.close();
    });
  }
});
