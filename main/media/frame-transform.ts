/**
 * Where a group call's end-to-end encryption of frames plugs in (issue 14
 * item 4: SFrame, RFC 9605, per sender over each Opus frame; the SFU forwards
 * what it cannot read). Each outgoing Opus frame passes {@link
 * FrameTransform.encrypt} after packetizing and before the producer sends it;
 * each incoming frame passes {@link FrameTransform.decrypt} after the consumer
 * receives it and before its jitter buffer. Without a transform frames go as
 * they are (plain Opus to the SFU).
 */
export interface FrameTransform {
  /**
   * One of our Opus frames → what goes in the RTP payload.
   * @param frame the Opus packet (RFC 7587 payload), not modified.
   */
  encrypt(frame: Buffer, meta: OutgoingFrameMeta): Buffer;
  /**
   * One received RTP payload → the Opus frame, or undefined when it cannot be
   * decrypted (unknown key, failed authentication): the frame is then dropped
   * and counted, and the jitter buffer conceals it.
   */
  decrypt(payload: Buffer, meta: IncomingFrameMeta): Buffer | undefined;
}

/** What is known of an outgoing frame when it is transformed. */
export interface OutgoingFrameMeta {
  /** RTP timestamp (48 kHz units) and sequence number as packetized (the sender may rewrite the SSRC). */
  timestamp: number;
  sequenceNumber: number;
}

/** What is known of an incoming frame when it is transformed. */
export interface IncomingFrameMeta {
  /** The sending participant's device (from `room.consume`'s `participant`). */
  deviceId: string;
  /** Its account's user name. */
  username: string;
  ssrc: number;
  timestamp: number;
  sequenceNumber: number;
}
