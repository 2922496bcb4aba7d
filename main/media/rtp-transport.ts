import type { RtpPacket } from 'werift';
import type { ReportBlock } from './rate-control';

/** What the media stages need of a received RTP packet (RFC 3550 §5.1): header fields and the payload. */
export interface ReceivedRtp {
  header: { ssrc: number; sequenceNumber: number; timestamp: number };
  payload: Buffer;
}

/**
 * The media path's view of a transport that carries one audio stream each
 * way (RFC 3550 RTP over SRTP, RFC 3711): a 1:1 call's WebRTC peer
 * (main/media/peer.ts) implements it. The stages never reach into werift.
 */
export interface RtpTransport {
  /** Sends one RTP packet of our stream (the transport adds SRTP and, when negotiated, RFC 2198 redundancy). */
  sendRtp(packet: RtpPacket): void;
  /** Received RTP of the remote audio stream (SRTP removed, redundancy unwrapped). */
  onRtp(listener: (rtp: ReceivedRtp) => void): void;
  /**
   * RTCP receiver report blocks about our stream (RFC 3550 §6.4.1), with the
   * round-trip time in ms when the transport knows it (from the block's LSR/DLSR).
   */
  onReceiverReport(listener: (block: ReportBlock, rttMs: number | undefined) => void): void;
  /** Earlier frames repeated in each packet, 0–2, when RFC 2198 redundancy was negotiated. */
  setRedundancy?(frames: number): void;
  /** Whether our packets go out as RFC 2198 redundant audio. */
  readonly sendsRedundancy?: boolean;
  /** Received packets that only a later packet's RFC 2198 redundancy brought (their own was lost or overtaken). */
  readonly packetsRecoveredByRedundancy?: number;
}
