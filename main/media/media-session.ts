import { EventEmitter } from 'node:events';
import type { MediaStats } from '../../common/protocol/control';
import { LivenessMonitor } from './liveness';
import { Mixer } from './mixer';
import { PlayoutChain, type FrameDecoder } from './playout-chain';
import { SendRateController } from './rate-control';
import { accumulate, CaptureChain, newLevelMeter, takeLevels } from './capture-chain';
import type { ReceivedRtp, RtpTransport } from './rtp-transport';

export type { FrameDecoder } from './playout-chain';

/** 48 kHz mono s16 frames from a microphone (native/audio-device CaptureStream fits). */
export interface AudioSource {
  on(event: 'frame', listener: (frame: Int16Array) => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  /** The device trouble an `error` reported is over (main/media/audio-router.ts), if the source can tell. */
  on(event: 'restored', listener: () => void): unknown;
  removeAllListeners(event?: string): unknown;
  start(): void;
  close(): Promise<void>;
  /** Called after the device underneath changed (main/media/audio-router.ts), if the source can change. */
  onSwitched?(listener: () => void): void;
}

/** A device-paced speaker (native/audio-device PlaybackStream fits). */
export interface AudioSink {
  on(event: 'error', listener: (error: Error) => void): unknown;
  /** The device trouble an `error` reported is over, if the sink can tell. */
  on(event: 'restored', listener: () => void): unknown;
  start(pull: () => Int16Array): void;
  close(): Promise<void>;
  /** Called after the device underneath changed, if the sink can change. */
  onSwitched?(listener: () => void): void;
}

/** Opus encoder for frames of one size. */
export interface FrameEncoder {
  /** @param frame exactly frameSamples samples, 48 kHz mono. */
  encode(frame: Int16Array): Buffer;
  /** Bits per second; the rate controller lowers it under heavy loss. */
  setBitrate?(bitsPerSecond: number): void;
  /** Expected loss, %, steering in-band FEC. */
  setExpectedLossPercent?(percent: number): void;
  /** The encoder's configured target (native/opus's OpusEncoder has it): the rate controller returns to it after loss. */
  readonly settings?: { readonly bitrate: number; readonly expectedLossPercent: number };
}

/**
 * Voice processing on the microphone path (native/apm's VoiceProcessor fits):
 * 10 ms frames (480 samples, 48 kHz mono) only.
 */
export interface CaptureProcessor {
  /**
   * True while the processor has nothing to do but its VAD and high-pass
   * filter (native/apm VoiceProcessor.bypassed: echo cancellation, noise
   * suppression and gain control all off). Absent: never.
   */
  readonly bypassed?: boolean;
  /** The far end exactly as written to the speaker: 480 samples. */
  processRender(frame: Int16Array): void;
  /** One microphone frame of 480 samples → the processed frame and whether it holds voice. */
  processCapture(frame: Int16Array): { frame: Int16Array; voice: boolean };
  /** The same in place (`frame` becomes the processed frame), without allocating; returns the VAD decision. */
  processCaptureInPlace?(frame: Int16Array): boolean;
  /** Speaker-to-microphone delay of the devices, ms (0–500). */
  setStreamDelayMs(ms: number): void;
  /** Whether the echo canceller runs now (native/apm VoiceProcessor.setEchoCancellerEngaged); absent: it always runs. */
  setEchoCancellerEngaged?(engaged: boolean): void;
  /** The echo canceller's own view: ERLE (dB) and the delay it found (ms). */
  echoMetrics?(): { erleDb?: number; delayMedianMs?: number; echoPath?: 'unknown' | 'present' | 'absent' };
}

/** Input and output levels and the talking flag, every {@link LEVELS_INTERVAL_MS}. */
export interface AudioLevels {
  /** RMS level of the microphone (before processing) over the interval, dBFS; −100 for digital silence. */
  inputDbfs: number;
  /** RMS level of what was sent (after processing; silence while held or not yet sending), dBFS. */
  sentDbfs: number;
  /** RMS level of what the speaker played over the interval, dBFS. */
  outputDbfs: number;
  /** Voice activity (the APM's VAD with a 200 ms hang-over); false without a processor or while it is bypassed. */
  talking: boolean;
}

export interface MediaSessionOptions {
  /** Frame (and RTP packet) duration, ms. */
  frameMs: 10 | 20;
  /**
   * Fixed jitter buffer delay, ms; without it the buffer adapts its delay to
   * the measured jitter (AdaptiveJitterBuffer).
   */
  jitterTargetMs?: number;
  source: AudioSource;
  sink: AudioSink;
  encoder: FrameEncoder;
  decoder: FrameDecoder;
  /** Opus DTX: packets of ≤ 2 bytes carry no audio and are not sent (RFC 7587 §3.1.3). */
  dtx?: boolean;
  /**
   * The encoder's starting bitrate (b/s) and expected-loss hint (%): the rate
   * controller's base. Default: the encoder's own `settings` as configured
   * (`--bitrate`, DEFAULT_OPUS), else 32 kb/s and 10 %.
   */
  encoderBase?: { bitrate: number; lossHintPercent: number };
  /** With no RTP from the peer for this long the session emits `mediaTimeout`, ms (default 30 000). */
  mediaTimeoutMs?: number;
  /** Injectable monotonic clock, ms. */
  now?: () => number;
  /**
   * Echo cancellation, noise suppression, gain control and VAD for the
   * microphone (fed with every played frame as the echo reference). With
   * `dtx`, frames the VAD calls silence are not sent, except one every
   * 400 ms (capture-chain.ts DTX_KEEPALIVE_MS) so the peer knows we are there.
   */
  processor?: CaptureProcessor;
  /**
   * The devices' speaker-to-microphone delay, ms, asked once the devices run
   * (and again after a device switch); default: none (the AEC finds it itself).
   */
  deviceDelayMs?: () => Promise<number | undefined>;
}

/** The events of a call's media, in this thread ({@link MediaSession}) or in the media worker (main/media/worker/host.ts). */
export interface MediaSessionEvents {
  firstAudio: [];
  deviceError: [Error, 'input' | 'output'];
  deviceRestored: ['input' | 'output'];
  mediaStalled: [];
  mediaResumed: [];
  mediaTimeout: [];
  /** The watchdog's clock jumped by this many ms: the process was stopped or the machine slept. */
  suspended: [number];
  levels: [AudioLevels];
}

/**
 * The audio of one call, as a chain of small stages:
 *
 *   source → processor → encoder → packetizer → RtpTransport (SRTP)                  (send)
 *   RtpTransport → PlayoutChain (jitter buffer → decoder) → Mixer → sink, processor (receive)
 *
 * plus a LivenessMonitor on the received stream. The transport is the call's
 * WebRTC peer (main/media/peer.ts implements RtpTransport); the stages never
 * reach into werift.
 *
 * The sink pulls one frame whenever the device has room, so playout is paced
 * by the sound card clock. Until the first packet plays, and whenever the
 * jitter buffer is re-buffering, the sink gets silence. A lost packet is
 * rebuilt from the next packet's in-band FEC when that packet is already
 * buffered, else concealed by the decoder (PLC). Events: `firstAudio` when the first received packet reaches the
 * speaker; `deviceError` when a device fails (the call goes on without it)
 * and `deviceRestored` when that direction works again.
 */
export class MediaSession extends EventEmitter<MediaSessionEvents> {
  private readonly frameSamples: number;
  private readonly playout: PlayoutChain;
  private readonly mixer: Mixer;
  private readonly liveness: LivenessMonitor;
  private readonly capture: CaptureChain;
  private readonly rate: SendRateController;
  private sending = false;
  private started = false;
  private closed = false;
  private held = false;
  private outputGain = 1;
  /** The transport replaced by the last `replacePeer`, whose RTP plays until the new one carries some. */
  private previousPeer: RtpTransport | undefined;
  /** RFC 2198 recoveries counted by transports this session used before the current one (ICE-restart transports). */
  private redRecoveredBefore = 0;
  /** Whether RTP came on the current transport since it was put in place. */
  private heardOnPeer = true;
  private readonly now: () => number;
  private levelsTimer: NodeJS.Timeout | undefined;
  private readonly meter = newLevelMeter();

  constructor(
    private peer: RtpTransport,
    private readonly options: MediaSessionOptions,
  ) {
    super();
    this.frameSamples = 48 * options.frameMs;
    this.now = options.now ?? (() => performance.now());
    this.playout = new PlayoutChain({
      frameSamples: this.frameSamples,
      decoder: options.decoder,
      ...(options.jitterTargetMs !== undefined ? { jitterTargetMs: options.jitterTargetMs } : {}),
      now: this.now,
      onFirstAudio: () => this.emit('firstAudio'),
      // The one stream of a 1:1 call goes to the speaker alone: its frames may be shortened or lengthened.
      alignPhase: true,
    });
    this.mixer = new Mixer(this.frameSamples);
    this.mixer.add(this.playout);
    this.capture = new CaptureChain({
      frameSamples: this.frameSamples,
      encoder: options.encoder,
      ...(options.processor ? { processor: options.processor } : {}),
      ...(options.dtx !== undefined ? { dtx: options.dtx } : {}),
      now: this.now,
      send: (packet) => this.peer.sendRtp(packet),
      onError: (e) => this.emit('deviceError', e, 'input'),
      meter: this.meter,
    });
    this.liveness = new LivenessMonitor({ timeoutMs: options.mediaTimeoutMs ?? 30_000, now: this.now });
    this.liveness.on('stalled', () => this.emit('mediaStalled'));
    this.liveness.on('resumed', () => this.emit('mediaResumed'));
    this.liveness.on('timeout', () => this.emit('mediaTimeout'));
    this.liveness.on('suspended', (ms) => this.emit('suspended', ms));
    // The base is read before the controller changes anything: after a lossy spell the
    // encoder goes back to what was configured, not to a constant.
    const configured = options.encoder.settings;
    const base = options.encoderBase ??
      (configured ? { bitrate: configured.bitrate, lossHintPercent: configured.expectedLossPercent } : { bitrate: 32_000, lossHintPercent: 10 });
    this.rate = new SendRateController(
      {
        setBitrate: (bps) => options.encoder.setBitrate?.(bps),
        setExpectedLossPercent: (pct) => options.encoder.setExpectedLossPercent?.(pct),
        setRedundancy: (frames) => this.peer.setRedundancy?.(frames),
      },
      { baseBitrate: base.bitrate, minLossHint: base.lossHintPercent, now: this.now },
    );
  }

  /**
   * Starts capture and playout. Capture frames are sent once `startSending`
   * is called (when DTLS is up); received RTP is accepted from now on.
   */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.listen(this.peer);
    this.options.source.on('frame', (frame) => this.capture.push(frame));
    this.options.source.on('error', (e) => this.emit('deviceError', e, 'input'));
    this.options.sink.on('error', (e) => this.emit('deviceError', e, 'output'));
    this.options.source.on('restored', () => this.emit('deviceRestored', 'input'));
    this.options.sink.on('restored', () => this.emit('deviceRestored', 'output'));
    this.options.sink.start(() => this.pullPlayout());
    this.options.source.start();
    this.levelsTimer = setInterval(() => this.emitLevels(), LEVELS_INTERVAL_MS);
    this.levelsTimer.unref();
    void this.updateDeviceDelay();
    // A new device has a new delay: measure again after a switch.
    this.options.source.onSwitched?.(() => void this.updateDeviceDelay());
    this.options.sink.onSwitched?.(() => void this.updateDeviceDelay());
  }

  /** Receives RTP and RTCP of `peer` while it is the session's transport. */
  private listen(peer: RtpTransport): void {
    peer.onRtp((rtp) => {
      if (peer === this.peer) {
        this.heardOnPeer = true;
        this.onRtp(rtp);
      } else if (peer === this.previousPeer && !this.heardOnPeer) {
        // Make before break: until the new transport carries the far end's audio, the old one's still plays.
        this.onRtp(rtp);
      }
    });
    // RTCP receiver reports about our stream drive the encoder (rate-control.ts).
    peer.onReceiverReport((report, rttMs) => {
      if (this.closed || peer !== this.peer) return;
      this.rate.onReport(report, rttMs);
    });
  }

  /** Whether no RTP has come for the stall time (the call shows "reconnecting"). */
  isStalled(): boolean {
    return this.liveness.stalled;
  }

  /** How long no RTP has come from the far end, ms (since sending began, if none ever came); undefined before {@link startSending}. */
  silentMs(): number | undefined {
    return this.sending ? this.liveness.silentMs() : undefined;
  }

  /**
   * Moves the call's audio onto a new, connected transport (after an ICE
   * restart onto another path): from now on frames are sent on `peer`, and
   * its RTP is played; the old peer's RTP still plays until the first packet
   * arrives on the new one (the far end may switch a moment later). The old
   * peer is the caller's to close. The far
   * end's new SSRC restarts the jitter buffer (RFC 3550 §8.2); the encoder,
   * the devices and our RTP sequence and timestamps carry on.
   */
  replacePeer(peer: RtpTransport): void {
    if (peer === this.peer || this.closed) return;
    this.redRecoveredBefore += this.peer.packetsRecoveredByRedundancy ?? 0;
    this.previousPeer = this.peer;
    this.heardOnPeer = false;
    this.peer = peer;
    if (this.started) this.listen(peer);
    peer.setRedundancy?.(this.rate.view().redundancy);
    if (this.sending) this.rate.setRedundancyNegotiated(peer.sendsRedundancy === true);
  }

  /**
   * Asks the platform for the devices' delay (after start and after a device
   * switch) and gives it to the echo canceller. Never throws.
   */
  async updateDeviceDelay(): Promise<void> {
    await this.capture.updateDeviceDelay(this.options.deviceDelayMs);
  }

  /**
   * Begins sending captured audio (call once the peer is connected and
   * authenticated; again is a no-op) and
   * watches the far end: with no RTP for STALL_MS (or half the timeout, if
   * shorter) it emits `mediaStalled` (the UI says "reconnecting"), when RTP
   * comes back `mediaResumed`, and after `mediaTimeoutMs` without any
   * `mediaTimeout` once (the peer crashed or the network is gone; a peer that
   * holds the call still sends silence, so a quiet call never stalls).
   */
  startSending(): void {
    if (this.sending || this.closed) return;
    this.sending = true;
    this.capture.sending = true;
    // The answer is applied by now: the encoder policy depends on whether packets carry redundancy.
    this.rate.setRedundancyNegotiated(this.peer.sendsRedundancy === true);
    this.liveness.start();
  }

  /**
   * On hold the microphone is not sent (the peer gets encoded silence, which
   * also tells it we are still there) and the speaker plays silence (received
   * packets are still drained so that resuming does not replay stale audio).
   */
  setHeld(held: boolean): void {
    this.held = held;
    this.capture.held = held;
  }

  /**
   * Mute / push-to-talk: with the microphone closed the peer gets encoded
   * silence (the stream keeps flowing, so its stall detection stays quiet).
   */
  setMicOpen(open: boolean): void {
    this.capture.micOpen = open;
  }

  /** Call output volume, a linear gain 0–1 applied to every played sample. */
  setOutputGain(gain: number): void {
    this.outputGain = Math.max(0, Math.min(1, gain));
  }

  stats(): MediaStats {
    const j = this.playout.stats();
    const net = this.rate.view();
    return {
      packetsSent: this.capture.packetizer.packetsSent,
      packetsReceived: j.packetsReceived,
      packetsLost: j.packetsLost,
      packetsLate: j.packetsLate,
      packetsDuplicate: j.packetsDuplicate,
      packetsDiscarded: j.packetsDiscarded,
      redundancy: this.peer.sendsRedundancy ? net.redundancy : 0,
      ptimeMs: this.options.frameMs,
      jitterTargetMs: j.targetMs,
      jitterMs: Math.round(j.jitterMs * 100) / 100,
      jitterBufferMs: j.bufferedMs,
      framesConcealed: j.framesConcealed,
      framesRecoveredByFec: j.framesRecoveredByFec,
      ...(this.peer.packetsRecoveredByRedundancy !== undefined ? { packetsRecoveredByRed: this.redRecoveredBefore + this.peer.packetsRecoveredByRedundancy } : {}),
      expandFrames: j.expandFrames,
      accelerateFrames: j.accelerateFrames,
      decelerateFrames: j.decelerateFrames,
      playoutAlignedMs: j.alignedMs,
      ...(net.rttMs !== undefined ? { rttMs: Math.round(net.rttMs * 10) / 10 } : {}),
      remoteLossPercent: Math.round(net.lossFraction * 1000) / 10,
      bitrate: net.bitrate,
      ...(this.options.processor && this.options.dtx ? { vadSilentFrames: this.capture.vadSilentFrames } : {}),
      ...this.echoStats(),
    };
  }

  private echoStats(): Pick<MediaStats, 'echoDelayMs' | 'echoErleDb' | 'deviceDelayMs' | 'echoPath'> {
    const out: Pick<MediaStats, 'echoDelayMs' | 'echoErleDb' | 'deviceDelayMs' | 'echoPath'> = {};
    if (this.capture.reportedDelayMs !== undefined) out.deviceDelayMs = this.capture.reportedDelayMs;
    try {
      const m = this.options.processor?.echoMetrics?.();
      if (m?.delayMedianMs !== undefined && m.delayMedianMs >= 0) out.echoDelayMs = m.delayMedianMs;
      if (m?.erleDb !== undefined && m.erleDb > -100) out.echoErleDb = m.erleDb;
      if (m?.echoPath !== undefined) out.echoPath = m.echoPath;
    } catch {
      // metrics are optional
    }
    return out;
  }

  /** Stops both devices. Never throws. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.sending = false;
    this.capture.close();
    this.liveness.stop();
    clearInterval(this.levelsTimer);
    this.options.source.removeAllListeners('frame');
    await Promise.allSettled([this.options.source.close(), this.options.sink.close()]);
  }

  private emitLevels(): void {
    this.emit('levels', takeLevels(this.meter, this.capture.talking()));
  }

  private onRtp(rtp: ReceivedRtp): void {
    if (this.closed) return;
    this.liveness.heard();
    this.playout.push(rtp, this.now());
  }

  /** Returns one frame for the speaker (shortened or lengthened in pauses, PlayoutChain `alignPhase`): the mix, on hold silence, at the call's output gain. */
  private pullPlayout(): Int16Array {
    const out = this.mixer.pull();
    if (this.held) out.fill(0);
    else if (this.outputGain < 1) for (let i = 0; i < out.length; i++) out[i] = Math.round(out[i]! * this.outputGain);
    accumulate(this.meter, 'output', out);
    // The echo canceller's reference is exactly what goes to the speaker.
    this.capture.render(out);
    return out;
  }
}

/** Levels are reported this often, ms (20 Hz). */
export const LEVELS_INTERVAL_MS = 50;
