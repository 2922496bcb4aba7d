import { EventEmitter } from 'node:events';
import type { RtpPacket } from 'werift';
import { accumulate, CaptureChain, newLevelMeter, takeLevels, type SentFrameInfo } from './capture-chain';
import type { FrameTransform } from './frame-transform';
import { LEVELS_INTERVAL_MS, type AudioLevels, type AudioSink, type AudioSource, type CaptureProcessor, type FrameEncoder } from './media-session';
import { Mixer } from './mixer';
import { PlayoutChain, type FrameDecoder, type PlayoutStats } from './playout-chain';
import type { ReceivedRtp } from './rtp-transport';

export interface GroupMediaOptions {
  /** Frame (and RTP packet) duration, ms. */
  frameMs: 10 | 20;
  /** Fixed jitter buffer delay, ms; without it each stream's buffer adapts. */
  jitterTargetMs?: number;
  source: AudioSource;
  sink: AudioSink;
  encoder: FrameEncoder;
  /** A new Opus decoder for each remote stream (decoders keep state per stream). */
  newDecoder: () => FrameDecoder;
  dtx?: boolean;
  processor?: CaptureProcessor;
  deviceDelayMs?: () => Promise<number | undefined>;
  /** End-to-end encryption of frames (SFrame), when there is one. */
  transform?: FrameTransform;
  /** Monotonic clock, ms. */
  now?: () => number;
}

/** One remote participant's stream as the group media sees it. */
export interface RemoteStream {
  /** Takes one received RTP packet of this stream (the transform, when any, is applied here). */
  push(rtp: ReceivedRtp): void;
  /** Takes the stream out of the mix. */
  remove(): void;
  stats(): PlayoutStats & { framesUndecryptable: number };
  /** Whether a packet of it has been played. */
  readonly playing: boolean;
}

/**
 * The audio of one group call, built from the same stages as a 1:1 call:
 *
 *   source → CaptureChain (APM → encoder → DTX → packetizer) → transform.encrypt → send   (one producer)
 *   per remote participant: RTP → transform.decrypt → PlayoutChain (jitter buffer → decoder/FEC/PLC) ─┐
 *   Mixer (all chains) → output gain → sink, and the echo canceller's reference  ◀─────────────────┘
 *
 * The transport side (mediasoup-client's producer and consumers) belongs to
 * main/core/room-client.ts: it gives this session a `send` for our packets
 * and pushes each consumer's RTP into its {@link RemoteStream}.
 * Events: `firstAudio` (device id) when a participant's first packet plays,
 * `deviceError`, `deviceRestored` and `levels` as in MediaSession.
 */
export class GroupMediaSession extends EventEmitter<{
  firstAudio: [string];
  deviceError: [Error, 'input' | 'output'];
  deviceRestored: ['input' | 'output'];
  levels: [AudioLevels];
}> {
  private readonly frameSamples: number;
  private readonly mixer: Mixer;
  private readonly capture: CaptureChain;
  private readonly meter = newLevelMeter();
  private readonly now: () => number;
  private send: ((packet: RtpPacket, info: SentFrameInfo) => void) | undefined;
  private started = false;
  private closed = false;
  private outputGain = 1;
  private levelsTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: GroupMediaOptions) {
    super();
    this.frameSamples = 48 * options.frameMs;
    this.now = options.now ?? (() => performance.now());
    this.mixer = new Mixer(this.frameSamples);
    this.capture = new CaptureChain({
      frameSamples: this.frameSamples,
      encoder: options.encoder,
      ...(options.processor ? { processor: options.processor } : {}),
      ...(options.dtx !== undefined ? { dtx: options.dtx } : {}),
      now: this.now,
      send: (packet, info) => this.sendFrame(packet, info),
      onError: (e) => this.emit('deviceError', e, 'input'),
      meter: this.meter,
    });
  }

  /** Starts the devices: the processor converges, the speaker plays the (empty) mix. */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    const { source, sink } = this.options;
    source.on('frame', (frame) => this.capture.push(frame));
    source.on('error', (e) => this.emit('deviceError', e, 'input'));
    sink.on('error', (e) => this.emit('deviceError', e, 'output'));
    source.on('restored', () => this.emit('deviceRestored', 'input'));
    sink.on('restored', () => this.emit('deviceRestored', 'output'));
    sink.start(() => this.pullPlayout());
    source.start();
    this.levelsTimer = setInterval(() => this.emitLevels(), LEVELS_INTERVAL_MS);
    this.levelsTimer.unref();
    void this.capture.updateDeviceDelay(this.options.deviceDelayMs);
    source.onSwitched?.(() => void this.capture.updateDeviceDelay(this.options.deviceDelayMs));
    sink.onSwitched?.(() => void this.capture.updateDeviceDelay(this.options.deviceDelayMs));
  }

  /**
   * Begins sending our frames through `send` (the producer's track), each
   * with its RFC 6464 level for the SFU's speaker detection.
   */
  startSending(send: (packet: RtpPacket, info: SentFrameInfo) => void): void {
    this.send = send;
    this.capture.sending = true;
  }

  /** Stops sending (the producer is gone); capture and playout go on. */
  stopSending(): void {
    this.capture.sending = false;
    this.send = undefined;
  }

  /** A new remote participant's stream, mixed from now on. */
  addStream(participant: { deviceId: string; username: string }): RemoteStream {
    let undecryptable = 0;
    const chain = new PlayoutChain({
      frameSamples: this.frameSamples,
      decoder: this.options.newDecoder(),
      ...(this.options.jitterTargetMs !== undefined ? { jitterTargetMs: this.options.jitterTargetMs } : {}),
      now: this.now,
      onFirstAudio: () => this.emit('firstAudio', participant.deviceId),
      // Each stream steers its own pulls to come just after its packets arrive: the mixer pulls a stream again
      // when its audio runs out, so its shortened or lengthened frames move its phase alone (mixer.ts).
      alignPhase: true,
    });
    const removeFromMix = this.mixer.add(chain);
    const transform = this.options.transform;
    let removed = false;
    return {
      push: (rtp) => {
        if (removed || this.closed) return;
        let payload = rtp.payload;
        if (transform) {
          const h = rtp.header;
          const plain = transform.decrypt(payload, { ...participant, ssrc: h.ssrc, timestamp: h.timestamp, sequenceNumber: h.sequenceNumber });
          if (!plain) {
            undecryptable++;
            return;
          }
          payload = plain;
        }
        chain.push(payload === rtp.payload ? rtp : { header: rtp.header, payload }, this.now());
      },
      remove: () => {
        removed = true;
        removeFromMix();
      },
      stats: () => ({ ...chain.stats(), framesUndecryptable: undecryptable }),
      get playing() {
        return chain.playing;
      },
    };
  }

  /** Mute / push-to-talk: closed, the others hear encoded silence (DTX sends almost nothing). */
  setMicOpen(open: boolean): void {
    this.capture.micOpen = open;
  }

  /** Output volume, a linear gain 0–1 applied to the mix. */
  setOutputGain(gain: number): void {
    this.outputGain = Math.max(0, Math.min(1, gain));
  }

  /** Packets sent so far. */
  /** Whether frames pass a FrameTransform (end-to-end encryption) on their way. */
  get hasTransform(): boolean {
    return this.options.transform !== undefined;
  }

  get packetsSent(): number {
    return this.capture.packetizer.packetsSent;
  }

  /** Stops both devices. Never throws. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.capture.close();
    clearInterval(this.levelsTimer);
    this.options.source.removeAllListeners('frame');
    await Promise.allSettled([this.options.source.close(), this.options.sink.close()]);
  }

  private sendFrame(packet: RtpPacket, info: SentFrameInfo): void {
    const send = this.send;
    if (!send || this.closed) return;
    const transform = this.options.transform;
    if (transform) {
      packet.payload = transform.encrypt(packet.payload, { timestamp: packet.header.timestamp, sequenceNumber: packet.header.sequenceNumber });
    }
    send(packet, info);
  }

  private emitLevels(): void {
    this.emit('levels', takeLevels(this.meter, this.capture.talking()));
  }

  /** The next stretch for the speaker (5 ms to a frame and a step: Mixer.pull): the mix of every participant at the output gain; also the echo reference. */
  private pullPlayout(): Int16Array {
    const out = this.mixer.pull();
    if (this.outputGain < 1) for (let i = 0; i < out.length; i++) out[i] = Math.round(out[i]! * this.outputGain);
    accumulate(this.meter, 'output', out);
    this.capture.render(out);
    return out;
  }
}
