/**
 * A private coturn (`turnserver`) on loopback with the TURN REST API
 * (`--use-auth-secret`): credentials are `username = "<unix expiry>:<account>"`,
 * `credential = base64(HMAC-SHA1(secret, username))` (server/turn.ts).
 *
 * Facts found on this machine (coturn 4.6): `-n` (no config file) with
 * `--listening-ip=127.0.0.1 --relay-ip=127.0.0.1 --no-tls --no-dtls --no-cli`
 * runs as any user; `--userdb=<tmp>/turndb` keeps it away from
 * /var/lib/turn/turndb; `--simple-log --log-file=<tmp>/turn.log` keeps the file
 * name as given; `--allow-loopback-peers` lets it relay to 127.0.0.1 (tests
 * only, never in production). A wrong or expired REST credential is answered
 * with 401 Unauthorized (logged as "check_stun_auth: Cannot find credentials
 * of user <…>"), and werift's TURN client then times out after ≈ 6 s instead
 * of reporting the 401.
 */
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { join } from 'node:path';
import { classes, makeIntegrityKey, Message, methods, parseMessage } from 'werift';
import { freeUdpPortRange, freeUdpTcpPort, LOOPBACK } from './ports';
import { makeTempDir, removeTempDir, run, startChild, waitFor } from './process';

/** A running coturn, see {@link startCoturn}. */
export interface Coturn {
  /** `turn:127.0.0.1:<port>?transport=udp` */
  readonly url: string;
  /** The UDP and TCP TURN URLs. */
  readonly urls: readonly string[];
  /** `stun:127.0.0.1:<port>` */
  readonly stunUrl: string;
  /** The `--static-auth-secret` (random hex); hand it to server/turn.ts. */
  readonly secret: string;
  /** The `--realm`. */
  readonly realm: string;
  readonly host: string;
  /** Listening port, UDP and TCP. */
  readonly port: number;
  /** Relay ports `[min, max]` (UDP, inclusive). */
  readonly relayPorts: readonly [number, number];
  /** coturn's log file (kept until stop). */
  readonly logPath: string;
  /** Stops coturn and removes its folder. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Sends one STUN Binding request (RFC 8489 §3) to `host:port` over UDP.
 * @returns the reflexive address coturn saw, e.g. `['127.0.0.1', 54321]`.
 * @throws Error after `timeoutMs` (default 500 ms) without an answer.
 */
/**
 * Sends one STUN/TURN request from `socket` to `to` and resolves with the
 * answer carrying the same transaction id (RFC 8489 §6.3).
 * @throws Error when nothing answers within `timeoutMs`.
 */
export function stunExchange(
  socket: Socket,
  request: Message,
  to: { host: string; port: number },
  timeoutMs = 2000,
): Promise<Message> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no answer from ${to.host}:${to.port} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onMessage = (data: Buffer) => {
      const answer = parseMessage(data);
      if (!answer || !answer.transactionId.equals(request.transactionId)) return;
      clearTimeout(timer);
      socket.off('message', onMessage);
      resolve(answer);
    };
    socket.on('message', onMessage);
    socket.send(request.bytes, to.port, to.host);
  });
}

export function stunBinding(
  host: string,
  port: number,
  timeoutMs = 500,
): Promise<[string, number]> {
  return new Promise((resolve, reject) => {
    const socket = createSocket('udp4');
    const request = new Message(methods.BINDING, classes.REQUEST);
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error(`no STUN answer from ${host}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('message', (data) => {
      const response = parseMessage(data);
      if (!response || !response.transactionId.equals(request.transactionId)) return;
      clearTimeout(timer);
      socket.close();
      const mapped = response.getAttributeValue('XOR-MAPPED-ADDRESS') as
        [string, number] | undefined;
      if (mapped) resolve(mapped);
      else reject(new Error('STUN answer without XOR-MAPPED-ADDRESS'));
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      socket.close();
      reject(err);
    });
    socket.send(request.bytes, port, host);
  });
}

/**
 * Starts coturn on a free loopback port with a random secret and realm, in a
 * temporary folder. Resolves once it answers a STUN Binding request (≈ 0.1 s).
 * Retries on another port when the chosen one was taken meanwhile.
 * @param options.relayPortCount how many UDP relay ports (default 40, i.e. 20 calls' worth).
 * @param options.verbose log every session (`-v`): its allocations, permissions and, when it
 *   closes, its usage (`rp`/`rb`/`sp`/`sb`: packets and bytes received and sent), with the TURN username.
 * @throws Error (with the log's tail) when coturn does not come up.
 */
export async function startCoturn(options: { relayPortCount?: number; verbose?: boolean } = {}): Promise<Coturn> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(options.relayPortCount ?? 40, options.verbose ?? false);
    } catch (err) {
      lastError = err;
    }
  }
  throw lastError;
}

async function startOnce(relayPortCount: number, verbose: boolean): Promise<Coturn> {
  const dir = makeTempDir('coturn');
  const port = await freeUdpTcpPort();
  const relayPorts = await freeUdpPortRange(relayPortCount);
  const secret = randomBytes(24).toString('hex');
  const realm = `parley-test-${randomBytes(4).toString('hex')}.invalid`;
  const logPath = join(dir, 'turn.log');
  const child = await startChild(
    'turnserver',
    [
      '-n',
      `--listening-ip=${LOOPBACK}`,
      `--relay-ip=${LOOPBACK}`,
      `--listening-port=${port}`,
      `--min-port=${relayPorts[0]}`,
      `--max-port=${relayPorts[1]}`,
      '--use-auth-secret',
      `--static-auth-secret=${secret}`,
      `--realm=${realm}`,
      '--no-tls',
      '--no-dtls',
      '--no-cli',
      '--allow-loopback-peers',
      '--fingerprint',
      `--userdb=${join(dir, 'turndb')}`,
      `--pidfile=${join(dir, 'turnserver.pid')}`,
      `--log-file=${logPath}`,
      '--simple-log',
      '--no-stdout-log',
      ...(verbose ? ['-v'] : []),
    ],
    { cwd: dir, stdio: 'ignore' },
  );
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await child.stop('SIGTERM', 2000);
    removeTempDir(dir);
  };
  try {
    await waitFor(
      `coturn on ${LOOPBACK}:${port}`,
      async () => {
        if (child.hasExited()) throw new Error('turnserver exited');
        return (await stunBinding(LOOPBACK, port, 200)) !== undefined;
      },
      5000,
      50,
    );
  } catch (err) {
    let tail = '';
    try {
      tail = (await run('tail', ['-n', '15', logPath])).trim();
    } catch {
      // no log yet
    }
    await stop();
    throw new Error(`coturn did not start: ${(err as Error).message}\n${tail}`, { cause: err });
  }
  return {
    url: `turn:${LOOPBACK}:${port}?transport=udp`,
    urls: [`turn:${LOOPBACK}:${port}?transport=udp`, `turn:${LOOPBACK}:${port}?transport=tcp`],
    stunUrl: `stun:${LOOPBACK}:${port}`,
    secret,
    realm,
    host: LOOPBACK,
    port,
    relayPorts,
    logPath,
    stop,
  };
}

/** What coturn answered an authenticated TURN Allocate. */
export type TurnAllocateOutcome =
  | { result: 'allocated'; relayed: [string, number] }
  | { result: 'refused'; code: number; reason: string };

/**
 * A TURN Allocate over UDP to `to` with the long-term credential mechanism
 * (RFC 8656 §7.2, RFC 8489 §9.2): the first, unauthenticated request earns a
 * 401 with REALM and NONCE; the second carries USERNAME, REALM, NONCE and
 * MESSAGE-INTEGRITY keyed by MD5(username:realm:credential).
 * @throws Error when the first answer is not the 401 challenge, or nothing answers.
 */
export async function turnAllocate(to: { host: string; port: number }, username: string, credential: string): Promise<TurnAllocateOutcome> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, LOOPBACK, resolve));
  try {
    // REQUESTED-TRANSPORT = UDP (protocol 17 in the first byte, RFC 8656 §18.7).
    const UDP = 0x11000000;
    const challenge = await stunExchange(socket, new Message(methods.ALLOCATE, classes.REQUEST).setAttribute('REQUESTED-TRANSPORT', UDP), to);
    const code = challenge.messageClass === classes.ERROR ? (challenge.getAttributeValue('ERROR-CODE') as [number, string])[0] : 0;
    if (code !== 401) throw new Error(`expected a 401 challenge from ${to.host}:${to.port}, got ${code || 'success'}`);
    const realm = challenge.getAttributeValue('REALM') as string;
    const nonce = challenge.getAttributeValue('NONCE') as Buffer;
    const request = new Message(methods.ALLOCATE, classes.REQUEST)
      .setAttribute('REQUESTED-TRANSPORT', UDP)
      .setAttribute('USERNAME', username)
      .setAttribute('REALM', realm)
      .setAttribute('NONCE', nonce)
      .addMessageIntegrity(makeIntegrityKey(username, realm, credential))
      .addFingerprint();
    const answer = await stunExchange(socket, request, to);
    if (answer.messageClass === classes.RESPONSE)
      return { result: 'allocated', relayed: answer.getAttributeValue('XOR-RELAYED-ADDRESS') as [string, number] };
    const [c, reason] = answer.getAttributeValue('ERROR-CODE') as [number, string];
    return { result: 'refused', code: c, reason };
  } finally {
    socket.close();
  }
}
