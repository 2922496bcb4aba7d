import { createSocket, type Socket } from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  classes,
  createTurnClient,
  makeIntegrityKey,
  Message,
  methods,
} from 'werift';
import { issueTurnCredential } from '../../server/turn';
import { startCoturn, stunExchange, type Coturn } from '../harness/coturn';

let coturn: Coturn;
beforeAll(async () => {
  coturn = await startCoturn();
});
afterAll(async () => {
  await coturn?.stop();
});

/** REQUESTED-TRANSPORT = UDP (protocol 17 in the first byte, RFC 5766 §14.7). */
const UDP_TRANSPORT = 0x11000000;

type AllocateOutcome =
  | { result: 'allocated'; relayed: [string, number] }
  | { result: 'refused'; code: number; reason: string };

const exchange = (socket: Socket, request: Message): Promise<Message> => stunExchange(socket, request, coturn);

/**
 * A TURN Allocate over UDP with the long-term credential mechanism
 * (RFC 8656 §7.2, RFC 8489 §9.2): the first, unauthenticated request earns a
 * 401 with REALM and NONCE; the second carries USERNAME, REALM, NONCE and
 * MESSAGE-INTEGRITY keyed by MD5(username:realm:credential). Returns what
 * coturn answered to the authenticated request.
 */
async function allocate(username: string, credential: string): Promise<AllocateOutcome> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  try {
    const challenge = await exchange(
      socket,
      new Message(methods.ALLOCATE, classes.REQUEST).setAttribute(
        'REQUESTED-TRANSPORT',
        UDP_TRANSPORT,
      ),
    );
    expect(challenge.messageClass).toBe(classes.ERROR);
    expect((challenge.getAttributeValue('ERROR-CODE') as [number, string])[0]).toBe(401);
    const realm = challenge.getAttributeValue('REALM') as string;
    const nonce = challenge.getAttributeValue('NONCE') as Buffer;
    expect(realm).toBe(coturn.realm);

    const request = new Message(methods.ALLOCATE, classes.REQUEST)
      .setAttribute('REQUESTED-TRANSPORT', UDP_TRANSPORT)
      .setAttribute('USERNAME', username)
      .setAttribute('REALM', realm)
      .setAttribute('NONCE', nonce)
      .addMessageIntegrity(makeIntegrityKey(username, realm, credential))
      .addFingerprint();
    const answer = await exchange(socket, request);
    if (answer.messageClass === classes.RESPONSE) {
      return {
        result: 'allocated',
        relayed: answer.getAttributeValue('XOR-RELAYED-ADDRESS') as [string, number],
      };
    }
    const [code, reason] = answer.getAttributeValue('ERROR-CODE') as [number, string];
    return { result: 'refused', code, reason };
  } finally {
    socket.close();
  }
}

describe('coturn accepts exactly the TURN credentials the server issues', () => {
  it('allocates a relay for a fresh credential from issueTurnCredential', async () => {
    const { username, credential } = issueTurnCredential(coturn.secret, 'acct-alice', 300);
    const outcome = await allocate(username, credential);
    expect(outcome).toMatchObject({ result: 'allocated' });
    const [host, port] = (outcome as { relayed: [string, number] }).relayed;
    expect(host).toBe('127.0.0.1');
    expect(port).toBeGreaterThanOrEqual(coturn.relayPorts[0]);
    expect(port).toBeLessThanOrEqual(coturn.relayPorts[1]);
  });

  it.each([
    ['an expired credential', () => issueTurnCredential(coturn.secret, 'acct-alice', -60)],
    [
      'a credential signed with another secret',
      () => issueTurnCredential('not-the-coturn-secret', 'acct-alice', 300),
    ],
    [
      'a credential for another username',
      () => ({
        ...issueTurnCredential(coturn.secret, 'acct-alice', 300),
        username: `${Math.floor(Date.now() / 1000) + 300}:acct-mallory`,
      }),
    ],
  ])('refuses %s with 401 Unauthorized', async (_label, make) => {
    const { username, credential } = make();
    expect(await allocate(username, credential)).toMatchObject({ result: 'refused', code: 401 });
  });

  it('relays datagrams for a werift TURN client holding an issued credential', async () => {
    const { username, credential } = issueTurnCredential(coturn.secret, 'acct-bob', 300);
    const turn = await createTurnClient(
      { address: [coturn.host, coturn.port], username, password: credential },
      { interfaceAddresses: { udp4: '127.0.0.1' } },
    );
    const peer = createSocket('udp4');
    try {
      await new Promise<void>((resolve) => peer.bind(0, '127.0.0.1', resolve));
      const received = new Promise<{ data: string; from: [string, number] }>((resolve) =>
        peer.once('message', (data, rinfo) =>
          resolve({ data: data.toString(), from: [rinfo.address, rinfo.port] }),
        ),
      );
      await turn.sendData(Buffer.from('hello through the relay'), [
        '127.0.0.1',
        peer.address().port,
      ]);
      const got = await received;
      expect(got.data).toBe('hello through the relay');
      // The peer sees the relayed address, not the client's own socket.
      expect(got.from).toEqual(turn.relayedAddress);
    } finally {
      peer.close();
      await turn.close();
    }
  });
});
