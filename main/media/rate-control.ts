/**
 * Sender-side adaptation of the Opus encoder to the network, from the RTCP
 * receiver reports of the far end (RFC 3550 §6.4.2): the loss it sees steers
 * the encoder's expected-loss hint (which sets how much in-band FEC libopus
 * spends, RFC 6716 §2.1.7) and the bitrate. The policy follows the shape of
 * WebRTC's audio network adaptor (`modules/audio_coding/audio_network_adaptor`:
 * FEC and bitrate controllers with thresholds and hysteresis), simplified:
 *
 * - loss is smoothed per report: `L ← 0.7·L + 0.3·fractionLost`;
 * - expected-loss hint = ceil(1.5 × L%), clamped to [`minLossHint`, 30] %;
 * - bitrate steps down from `baseBitrate` to 24 kb/s when L > 10 % and to
 *   16 kb/s when L > 20 % (fewer bits for the primary stream leaves room for
 *   FEC and eases congestion), and steps back up one level after 10 s with
 *   L < 5 %.
 *
 * Round-trip time comes from the report's LSR/DLSR (RFC 3550 §6.4.1).
 */
export interface EncoderControl {
  setBitrate?(bitsPerSecond: number): void;
  setExpectedLossPercent?(percent: number): void;
}

/** One RTCP report block about our stream (RFC 3550 §6.4.1). */
export interface ReportBlock {
  /** Fraction of our packets lost since the last report, 0–255 (/256). */
  fractionLost: number;
  /** Interarrival jitter in RTP timestamp units (48 kHz). */
  jitter: number;
  /** Middle 32 bits of the NTP time of our last SR, or 0. */
  lsr: number;
  /** Delay since that SR at the receiver, 1/65536 s. */
  dlsr: number;
}

export interface NetworkView {
  /** Smoothed loss of our outgoing packets, 0–1. */
  lossFraction: number;
  /** Round-trip time, ms (undefined until an SR was answered). */
  rttMs: number | undefined;
  /** Far end's jitter estimate of our stream, ms. */
  remoteJitterMs: number;
  bitrate: number;
  lossHintPercent: number;
}

const LEVELS = [24_000, 16_000];
const UP_AFTER_MS = 10_000;

export class SendRateController {
  private loss = 0;
  private rtt: number | undefined;
  private remoteJitterMs = 0;
  private level = 0; // 0 = base bitrate, 1 = 24k, 2 = 16k
  private calmSince: number | undefined;
  private hint: number;

  constructor(
    private readonly encoder: EncoderControl,
    private readonly options: { baseBitrate: number; minLossHint: number; now?: () => number },
  ) {
    this.hint = options.minLossHint;
  }

  /**
   * Takes one report block about our stream.
   * @param ntpNow current NTP time as seconds since 1900 (for RTT); defaults to the wall clock.
   */
  onReport(block: ReportBlock, ntpNow: number = Date.now() / 1000 + 2_208_988_800): void {
    this.loss = 0.7 * this.loss + 0.3 * (block.fractionLost / 256);
    this.remoteJitterMs = block.jitter / 48;
    if (block.lsr !== 0) {
      const a = Math.floor(ntpNow * 65536) >>> 0; // middle 32 bits of NTP (16.16)
      const rtt = (((a - block.lsr - block.dlsr) >>> 0) / 65536) * 1000;
      if (rtt >= 0 && rtt < 10_000) this.rtt = this.rtt === undefined ? rtt : 0.8 * this.rtt + 0.2 * rtt;
    }
    this.apply();
  }

  view(): NetworkView {
    return {
      lossFraction: this.loss,
      rttMs: this.rtt,
      remoteJitterMs: this.remoteJitterMs,
      bitrate: this.bitrate(),
      lossHintPercent: this.hint,
    };
  }

  private bitrate(): number {
    return this.level === 0 ? this.options.baseBitrate : Math.min(this.options.baseBitrate, LEVELS[this.level - 1]!);
  }

  private apply(): void {
    const now = (this.options.now ?? Date.now)();
    const lossPct = this.loss * 100;
    const hint = Math.min(30, Math.max(this.options.minLossHint, Math.ceil(1.5 * lossPct)));
    if (hint !== this.hint) {
      this.hint = hint;
      this.encoder.setExpectedLossPercent?.(hint);
    }
    const before = this.level;
    const wanted = lossPct > 20 ? 2 : lossPct > 10 ? 1 : 0;
    if (wanted > this.level) {
      this.level = wanted;
      this.calmSince = undefined;
    } else if (lossPct < 5 && this.level > 0) {
      this.calmSince ??= now;
      if (now - this.calmSince >= UP_AFTER_MS) {
        this.level--;
        this.calmSince = now;
      }
    } else {
      this.calmSince = undefined;
    }
    if (this.level !== before) this.encoder.setBitrate?.(this.bitrate());
  }
}
