/**
 * The group call's media on its own (main/media/group-media.ts): the shared
 * CaptureChain sends our microphone through the real Opus encoder with an
 * RFC 6464 level, each remote stream goes through its own PlayoutChain into
 * the Mixer, the mix is the echo reference, mute sends silence, and the
 * FrameTransform hook is applied to every outgoing and incoming frame.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { RtpPacket } from 'werift';
import { levelDbov, type SentFrameInfo } from '../../main/media/capture-chain';
import type { FrameTransform } from '../../main/media/frame-transform';
import { GroupMediaSession } from '../../main/media/group-media';
import type { AudioSink, AudioSource, CaptureProcessor } from '../../main/media/media-session';
import { createOpusDecoder, createOpusEncoder } from '../../native/opus';

const FRAME = 960;

function tone(freq: number, frame: number, amplitude = 10362): Int16Array {
  const pcm = new Int16Array(FRAME);
  for (let i = 0; i < FRAME; i++) pcm[i] = Math.round(amplitude * Math.sin((2 * Math.PI * freq * (frame * FRAME + i)) / 48000));
  return pcm;
}

function rms(x: Int16Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s / x.length);
}

class FakeSource extends EventEmitter implements AudioSource {
  start(): void {}
  async close(): Promise<void> {}
  frame(pcm: Int16Array): void {
    this.emit('frame', pcm);
  }
}

class FakeSink extends EventEmitter implements AudioSink {
  pull: (() => Int16Array) | undefined;
  start(pull: () => Int16Array): void {
    this.pull = pull;
  }
  async close(): Promise<void> {}
}

/** A processor that passes frames through, says "voice" above −40 dBFS and remembers the echo reference. */
class PassThrough implements CaptureProcessor {
  rendered = 0;
  renderedEnergy = 0;
  processRender(frame: Int16Array): void {
    this.rendered += frame.length;
    this.renderedEnergy += rms(frame);
  }
  processCapture(frame: Int16Array): { frame: Int16Array; voice: boolean } {
    return { frame, voice: rms(frame) > 328 };
  }
  setStreamDelayMs(): void {}
}

/** XOR with one byte and a one-byte tag: enough to prove the hook runs both ways. */
const xorTransform = (key: number): FrameTransform => ({
  encrypt: (frame) => Buffer.concat([Buffer.from([0xee]), Buffer.from(frame.map((b) => b ^ key))]),
  decrypt: (payload) => (payload[0] === 0xee ? Buffer.from(payload.subarray(1).map((b) => b ^ key)) : undefined),
});

function session(transform?: FrameTransform) {
  const source = new FakeSource();
  const sink = new FakeSink();
  const processor = new PassThrough();
  let clock = 0;
  const media = new GroupMediaSession({
    frameMs: 20,
    jitterTargetMs: 40,
    source,
    sink,
    encoder: createOpusEncoder({ frameMs: 20 }),
    newDecoder: () => createOpusDecoder(),
    processor,
    ...(transform ? { transform } : {}),
    now: () => clock,
  });
  const sent: { packet: RtpPacket; info: SentFrameInfo }[] = [];
  media.start();
  media.startSending((packet, info) => sent.push({ packet, info }));
  return { media, source, sink, processor, sent, tick: (ms: number) => (clock += ms) };
}

describe('GroupMediaSession', () => {
  it('sends the microphone as Opus RTP with its RFC 6464 level and voice bit; muted, silence at level 127', () => {
    const { media, source, sent } = session();
    for (let f = 0; f < 10; f++) source.frame(tone(440, f));
    media.setMicOpen(false);
    for (let f = 10; f < 20; f++) source.frame(tone(440, f));
    expect(sent).toHaveLength(20);
    expect(sent[0]!.info).toEqual({ levelDbov: levelDbov(tone(440, 0)), voice: true });
    expect(sent[0]!.info.levelDbov).toBe(13); // a −10 dBFS peak sine is −13 dBov RMS
    expect(sent[15]!.info).toEqual({ levelDbov: 127, voice: false });
    // RTP: consecutive sequence numbers, 20 ms of 48 kHz apart.
    const h = sent.map((s) => s.packet.header);
    expect((h[1]!.sequenceNumber - h[0]!.sequenceNumber) & 0xffff).toBe(1);
    expect((h[1]!.timestamp - h[0]!.timestamp) >>> 0).toBe(FRAME);
  });

  it('plays each remote stream through its own jitter buffer and decoder, mixed, and feeds the mix to the echo canceller', () => {
    const { media, sink, processor, tick } = session();
    const encA = createOpusEncoder({ frameMs: 20 });
    const encB = createOpusEncoder({ frameMs: 20 });
    const a = media.addStream({ deviceId: 'a', username: 'alice' });
    const b = media.addStream({ deviceId: 'b', username: 'bob' });
    const out: Int16Array[] = [];
    let played = 0;
    for (let f = 0; f < 50; f++) {
      tick(20);
      a.push({ header: { ssrc: 1, sequenceNumber: f, timestamp: f * FRAME }, payload: encA.encode(tone(440, f, 8000)) });
      b.push({ header: { ssrc: 2, sequenceNumber: 1000 + f, timestamp: 77 + f * FRAME }, payload: encB.encode(tone(660, f, 8000)) });
      // As a device does: pulls until it has 20 ms (each stream aligns its phase, so a pull may bring 5 ms while buffering).
      for (let got = 0; got < FRAME; ) {
        const frame = sink.pull!();
        out.push(frame);
        got += frame.length;
        played += frame.length;
      }
    }
    expect(a.playing && b.playing).toBe(true);
    expect(a.stats().packetsReceived).toBe(50);
    expect(b.stats().packetsReceived).toBe(50);
    // Two tones of RMS ≈ 5657 each: the mix carries both (≈ 8000 RMS), more than either alone.
    const tail = out.slice(30);
    const level = tail.reduce((s, f) => s + rms(f), 0) / tail.length;
    expect(level).toBeGreaterThan(7000);
    // The echo canceller's reference is exactly what went to the speaker.
    expect(processor.rendered).toBe(played);
    expect(played).toBeGreaterThanOrEqual(50 * FRAME);
    // A stream taken out of the mix is no longer heard.
    b.remove();
    a.remove();
    tick(20);
    expect(rms(sink.pull!())).toBe(0);
  });

  it('passes every outgoing frame through FrameTransform.encrypt and every incoming one through decrypt', () => {
    const { source, sent, sink, media, tick } = session(xorTransform(0x5a));
    for (let f = 0; f < 5; f++) source.frame(tone(440, f));
    // What leaves is not Opus any more: tagged and XORed.
    expect(sent.every((s) => s.packet.payload[0] === 0xee)).toBe(true);
    // Fed back as a remote stream, it decodes: the transform undoes itself.
    const loop = media.addStream({ deviceId: 'me-again', username: 'echo' });
    const out: Int16Array[] = [];
    for (const [i, s] of sent.entries()) {
      tick(20);
      loop.push({ header: { ssrc: 3, sequenceNumber: i, timestamp: i * FRAME }, payload: s.packet.payload });
      out.push(sink.pull!());
    }
    // A frame the transform cannot decrypt is dropped and counted.
    loop.push({ header: { ssrc: 3, sequenceNumber: 99, timestamp: 99 * FRAME }, payload: Buffer.from([1, 2, 3]) });
    for (let i = 0; i < 5; i++) {
      tick(20);
      out.push(sink.pull!());
    }
    expect(loop.stats().framesUndecryptable).toBe(1);
    expect(loop.stats().packetsReceived).toBe(5);
    expect(Math.max(...out.map(rms))).toBeGreaterThan(3000);
  });
});
