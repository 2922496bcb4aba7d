/**
 * A group-call participant for tests: mediasoup-client's stock `Device`
 * (Chrome111 handler) running in Node over werift's RTCPeerConnection
 * polyfill, signaling through a {@link SignalClient} with the `room.*`
 * methods (common/protocol/sfu.ts). It sends Opus RTP it encodes itself (a
 * sine per participant, through native/opus, with an RFC 6464 audio level in
 * each packet) and keeps every RTP packet each consumer receives, so a test
 * can decode and judge what each participant heard from each other.
 *
 * ```ts
 * const p = await SfuParticipant.join(device.client, roomId);
 * await p.produceSine({ frequencyHz: 440, levelDbov: 20 });
 * await p.consumeAll();
 * p.packetsFrom(otherDeviceId)   // RtpPacket[] received from that participant
 * ```
 */
import 'werift'; // werift before its polyfill: the polyfill's imports are undefined otherwise (DESIGN facts)
import { MediaStreamTrack, RTCRtpCodecParameters, RtpHeader, RtpPacket, useAudioLevelIndication, useSdesMid } from 'werift';
import { installPolyfill } from 'werift/polyfill';
import { Device, type types as msc } from 'mediasoup-client';
import { createOpusEncoder, SAMPLES_20MS, OPUS_SAMPLE_RATE } from '../../native/opus';
import type { RoomParticipant, RoomProducer } from '../../common/protocol/sfu';
import type { SignalClient } from './signal-client';
import { completeIceRestart } from '../../main/media/webrtc-polyfill';

const AUDIO_LEVEL_URI = 'urn:ietf:params:rtp-hdrext:ssrc-audio-level';
/** 20 ms of Opus at 48 kHz in RTP timestamp units (RFC 7587 §4.1: the clock is always 48 kHz). */
const TIMESTAMP_STEP = SAMPLES_20MS;

let polyfillInstalled = false;
/**
 * Puts werift's RTCPeerConnection (and MediaStream, …) on globalThis once per
 * process, for loopback: Opus (and VP8, only for Device.load's probe), the `mid` and audio-level header
 * extensions (werift offers none by default), IPv4 loopback candidates.
 */
function installWeriftPolyfill(): void {
  if (polyfillInstalled) return;
  polyfillInstalled = true;
  installPolyfill({
    mediaRegister: [],
    peerConnectionConfig: {
      codecs: {
        audio: [
          new RTCRtpCodecParameters({
            mimeType: 'audio/opus',
            clockRate: OPUS_SAMPLE_RATE,
            channels: 2,
            payloadType: 111,
            parameters: 'minptime=10;useinbandfec=1;usedtx=1',
          }),
        ],
        // Device.load probes audio and video capabilities with one offer, and
        // werift refuses a transceiver without codecs; the rooms are audio only.
        video: [new RTCRtpCodecParameters({ mimeType: 'video/VP8', clockRate: 90000, payloadType: 96 })],
      },
      headerExtensions: { audio: [useSdesMid(), useAudioLevelIndication()], video: [] },
      iceUseIpv6: false,
      iceAdditionalHostAddresses: ['127.0.0.1'],
      iceInterfaceAddresses: { udp4: '127.0.0.1' },
    },
  });
}

/** What this participant receives from one producer of another participant. */
export interface ReceivedStream {
  producerId: string;
  participant: RoomParticipant;
  consumer: msc.Consumer;
  /** Every RTP packet received, in arrival order, with its arrival time (Date.now()). */
  packets: { rtp: RtpPacket; at: number }[];
}

/** One device in one room, with its send and recv transports. */
export class SfuParticipant {
  readonly device: Device;
  private sendTransport: msc.Transport | undefined;
  private recvTransport: msc.Transport | undefined;
  private producer: msc.Producer | undefined;
  private sender: NodeJS.Timeout | undefined;
  private readonly streams = new Map<string, ReceivedStream>();
  private readonly knownProducers = new Map<string, RoomProducer>();
  /** How many RTP packets this participant has sent. */
  sent = 0;
  private level: (frame: number) => number = () => 127;
  /** The dominant speaker `room.join` named (device id), if any. */
  readonly speakerAtJoin: string | undefined;

  private constructor(
    readonly client: SignalClient,
    readonly roomId: string,
    readonly me: RoomParticipant,
    join: { producers: RoomProducer[]; speaker: { participant: RoomParticipant } | null },
  ) {
    this.speakerAtJoin = join.speaker?.participant.deviceId;
    installWeriftPolyfill();
    this.device = new Device({ handlerName: 'Chrome111' });
    for (const p of join.producers) this.knownProducers.set(p.producerId, p);
  }

  /**
   * Joins `roomId` with the device signed in on `client`, loads the Device
   * with the router's capabilities and creates both transports. `link`: the
   * token of a call link (for an account that was not invited).
   * @throws ParleyError from `room.join` (`room_full`, `room_ended`, `not_found`, `forbidden`, …).
   */
  static async join(client: SignalClient, roomId: string, me: RoomParticipant, link?: string): Promise<SfuParticipant> {
    const joined = await client.request('room.join', link ? { roomId, link } : { roomId });
    const p = new SfuParticipant(client, roomId, me, joined);
    await p.device.load({ routerRtpCapabilities: joined.routerRtpCapabilities as msc.RtpCapabilities });
    p.sendTransport = await p.createTransport('send');
    p.recvTransport = await p.createTransport('recv');
    return p;
  }

  /**
   * Produces a sine of `frequencyHz` (amplitude 0.3 of full scale) as Opus
   * in 20 ms RTP packets until {@link stopSending}. Each packet carries an
   * RFC 6464 audio level: `levelDbov` (0–127, −dBov), or what
   * {@link setLevel} says; the voice-activity bit is set below 127.
   */
  async produceSine(options: { frequencyHz: number; levelDbov: number }): Promise<string> {
    const transport = this.sendTransport;
    if (!transport) throw new Error('join first');
    const track = new MediaStreamTrack({ kind: 'audio' });
    this.producer = await transport.produce({
      track: track as never,
      codecOptions: { opusStereo: false, opusFec: true, opusDtx: true },
    });
    const levelExtId = this.producer.rtpParameters.headerExtensions?.find((e) => e.uri === AUDIO_LEVEL_URI)?.id;
    const encoder = createOpusEncoder({ frameMs: 20, fec: true });
    let sample = 0;
    let frame = 0;
    let seq = Math.floor(Math.random() * 0xffff);
    let timestamp = Math.floor(Math.random() * 0xffffffff);
    this.level = () => options.levelDbov;
    const sendFrame = (): void => {
      const pcm = new Int16Array(SAMPLES_20MS);
      for (let i = 0; i < pcm.length; i++, sample++)
        pcm[i] = Math.round(0.3 * 32767 * Math.sin((2 * Math.PI * options.frequencyHz * sample) / OPUS_SAMPLE_RATE));
      const dbov = Math.min(127, Math.max(0, Math.round(this.level(frame++))));
      const header = new RtpHeader({
        payloadType: 111,
        sequenceNumber: seq,
        timestamp,
        ssrc: 0,
        marker: false,
        extensions: levelExtId !== undefined ? [{ id: levelExtId, payload: Buffer.from([(dbov < 127 ? 0x80 : 0) | dbov]) }] : [],
      });
      seq = (seq + 1) & 0xffff;
      timestamp = (timestamp + TIMESTAMP_STEP) >>> 0;
      track.writeRtp(new RtpPacket(header, encoder.encode(pcm)));
      this.sent += 1;
    };
    this.sender = setInterval(sendFrame, 20);
    return this.producer.id;
  }

  /**
   * The audio level each following packet announces, from the frame's index
   * (20 ms each): −dBov 0–127, 127 = silence. E.g. talk bursts:
   * `f => (f % 25 < 15 ? 10 : 127)`.
   */
  setLevel(level: (frame: number) => number): void {
    this.level = level;
  }

  /** Stops the sine (the producer stays). */
  stopSending(): void {
    clearInterval(this.sender);
    this.sender = undefined;
  }

  /**
   * Consumes every producer of the others it knows of (from the join and
   * every `room.producer_added` so far) that it does not consume yet, and
   * resumes each consumer once it exists.
   */
  async consumeAll(): Promise<void> {
    this.refreshKnown();
    for (const p of this.knownProducers.values()) {
      if (this.streams.has(p.producerId)) continue;
      await this.consume(p.producerId);
    }
  }

  /** How many producers of the others it knows of now (from its join and the notifications so far). */
  producersKnown(): number {
    this.refreshKnown();
    return this.knownProducers.size;
  }

  private refreshKnown(): void {
    for (const n of this.client.notifications()) {
      if (n.method !== 'room.producer_added') continue;
      const { roomId, producer } = n.params as { roomId: string; producer: RoomProducer };
      if (roomId === this.roomId) this.knownProducers.set(producer.producerId, producer);
    }
    for (const n of this.client.notifications()) {
      if (n.method !== 'room.producer_removed') continue;
      const { roomId, producerId } = n.params as { roomId: string; producerId: string };
      if (roomId === this.roomId) this.knownProducers.delete(producerId);
    }
  }

  /** Consumes one producer and resumes it. @throws ParleyError from `room.consume`. */
  async consume(producerId: string): Promise<ReceivedStream> {
    const transport = this.recvTransport;
    if (!transport) throw new Error('join first');
    const r = await this.client.request('room.consume', {
      roomId: this.roomId,
      producerId,
      rtpCapabilities: this.device.rtpCapabilities,
    });
    const consumer = await transport.consume({
      id: r.consumerId,
      producerId: r.producerId,
      kind: 'audio',
      rtpParameters: r.rtpParameters as msc.RtpParameters,
    });
    const stream: ReceivedStream = { producerId, participant: r.participant, consumer, packets: [] };
    const track = consumer.track as unknown as MediaStreamTrack;
    track.onReceiveRtp.subscribe((rtp) => stream.packets.push({ rtp, at: Date.now() }));
    this.streams.set(producerId, stream);
    await this.client.request('room.consumer.resume', { roomId: this.roomId, consumerId: r.consumerId });
    return stream;
  }

  /** The device id of the dominant speaker as this participant knows it: the last `room.speaker`, else its join's. */
  dominantSpeaker(): string | undefined {
    const said = this.client
      .notifications()
      .filter((x) => x.method === 'room.speaker' && (x.params as { roomId: string }).roomId === this.roomId);
    const last = said[said.length - 1]?.params as { participant: RoomParticipant } | undefined;
    return last ? last.participant.deviceId : this.speakerAtJoin;
  }

  /** What this participant received from `deviceId` (every producer of it). */
  packetsFrom(deviceId: string): { rtp: RtpPacket; at: number }[] {
    return [...this.streams.values()]
      .filter((s) => s.participant.deviceId === deviceId)
      .flatMap((s) => s.packets);
  }

  /**
   * ICE restart of one transport (RFC 8445 §2.4): new ICE credentials from
   * `room.transport.restart_ice`, then mediasoup-client's `Transport.restartIce`.
   */
  async restartIce(direction: 'send' | 'recv'): Promise<void> {
    const transport = direction === 'send' ? this.sendTransport : this.recvTransport;
    if (!transport) throw new Error(`no ${direction} transport`);
    const r = await this.client.request('room.transport.restart_ice', { roomId: this.roomId, transportId: transport.id });
    await transport.restartIce({ iceParameters: r.iceParameters });
    await completeIceRestart(transport);
  }

  /** The connection state of one transport (mediasoup-client's, from the peer connection's). */
  connectionState(direction: 'send' | 'recv'): string | undefined {
    return (direction === 'send' ? this.sendTransport : this.recvTransport)?.connectionState;
  }

  /** Says `room.leave` and closes its transports. */
  async leave(): Promise<void> {
    this.stopSending();
    await this.client.request('room.leave', { roomId: this.roomId });
    this.close();
  }

  /** Closes the local transports (no signaling). */
  close(): void {
    this.stopSending();
    this.sendTransport?.close();
    this.recvTransport?.close();
  }

  private async createTransport(direction: 'send' | 'recv'): Promise<msc.Transport> {
    const r = await this.client.request('room.transport.create', { roomId: this.roomId, direction });
    const options = {
      id: r.transportId,
      iceParameters: r.iceParameters,
      iceCandidates: r.iceCandidates as msc.IceCandidate[],
      dtlsParameters: r.dtlsParameters as msc.DtlsParameters,
    };
    const transport =
      direction === 'send' ? this.device.createSendTransport(options) : this.device.createRecvTransport(options);
    transport.on('connect', ({ dtlsParameters }, callback, errback) => {
      this.client
        .request('room.transport.connect', {
          roomId: this.roomId,
          transportId: transport.id,
          dtlsParameters: dtlsParameters as never,
        })
        .then(() => callback(), errback);
    });
    if (direction === 'send') {
      transport.on('produce', ({ rtpParameters }, callback, errback) => {
        this.client
          .request('room.produce', {
            roomId: this.roomId,
            transportId: transport.id,
            kind: 'audio',
            rtpParameters: rtpParameters as never,
          })
          .then(({ producerId }) => callback({ id: producerId }), errback);
      });
    }
    return transport;
  }
}
