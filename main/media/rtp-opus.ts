import { randomBytes } from 'node:crypto';
import { RtpHeader, RtpPacket } from 'werift';

/**
 * Opus in RTP, RFC 7587. The RTP clock is always 48 kHz whatever Opus'
 * internal bandwidth (§4.1); the SDP says `opus/48000/2` even for mono
 * (§7); `minptime=10;useinbandfec=1` tells the peer we send 10 ms packets and
 * can decode in-band FEC (§6.1).
 */
export const OPUS_CLOCK_RATE = 48_000;
/** Dynamic payload type we offer for Opus (the value browsers use). */
export const OPUS_PAYLOAD_TYPE = 111;
export const OPUS_FMTP = 'minptime=10;useinbandfec=1';
/**
 * Dynamic payload type we offer for RFC 2198 redundant audio carrying Opus
 * (`red/48000/2` with fmtp `111/111`, as browsers offer it): each packet also
 * carries the previous one or two Opus frames, so a burst of up to that many
 * lost packets is rebuilt exactly from the next packet that arrives.
 */
export const RED_PAYLOAD_TYPE = 63;
export const RED_FMTP = `${OPUS_PAYLOAD_TYPE}/${OPUS_PAYLOAD_TYPE}`;

/**
 * Turns encoded Opus frames into RTP packets (RFC 3550 §5.1, RFC 7587 §4.2):
 * random initial sequence number and timestamp, the timestamp advancing by the
 * frame's sample count at 48 kHz, the marker bit on the first packet of each
 * talkspurt (after start or a DTX gap).
 */
export class OpusPacketizer {
  private sequenceNumber: number;
  private timestamp: number;
  private talkspurtStart = true;
  /** Packets produced so far. */
  packetsSent = 0;

  constructor(
    readonly ssrc: number = randomBytes(4).readUInt32BE(0),
    readonly payloadType: number = OPUS_PAYLOAD_TYPE,
  ) {
    this.sequenceNumber = randomBytes(2).readUInt16BE(0);
    this.timestamp = randomBytes(4).readUInt32BE(0);
  }

  /**
   * Wraps one Opus packet covering `samples` samples (480 for 10 ms, 960 for 20 ms).
   */
  packetize(opus: Buffer, samples: number): RtpPacket {
    const header = new RtpHeader({
      payloadType: this.payloadType,
      sequenceNumber: this.sequenceNumber,
      timestamp: this.timestamp,
      ssrc: this.ssrc,
      marker: this.talkspurtStart,
    });
    this.talkspurtStart = false;
    this.sequenceNumber = (this.sequenceNumber + 1) & 0xffff;
    this.timestamp = (this.timestamp + samples) >>> 0;
    this.packetsSent++;
    return new RtpPacket(header, opus);
  }

  /**
   * Advances the clock over `samples` samples that are not sent (DTX silence,
   * RFC 7587 §3.1.3): the next packet carries the marker bit.
   */
  skip(samples: number): void {
    this.timestamp = (this.timestamp + samples) >>> 0;
    this.talkspurtStart = true;
  }
}

/**
 * Adds `a=ptime` to every Opus audio section of an SDP (RFC 4566 §6), so a
 * browser peer sends packets of our frame size.
 */
export function withPtime(sdp: string, ptimeMs: number): string {
  if (/^a=ptime:/m.test(sdp)) return sdp.replace(/^a=ptime:\d+/gm, `a=ptime:${ptimeMs}`);
  return sdp.replace(/^(a=rtpmap:\d+ opus\/48000\/2\r?\n)/gim, `$1a=ptime:${ptimeMs}\r\n`);
}
