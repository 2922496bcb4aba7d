/**
 * Relays per region (issue 15 item 4, Signal's relays endpoint): the server
 * is configured with two real coturn instances — the default one and the
 * "eu" region's, each with its own static-auth-secret — and a routing table
 * of client address ranges. A client's relay credentials name the instances
 * of its region and are accepted by exactly those (a TURN Allocate on each).
 * The client's address comes from nginx-style X-Forwarded-For through
 * `trust_proxy`, as behind the load balancer of docs/deploy.md.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCoturn, turnAllocate, type Coturn } from '../harness/coturn';
import { adminRequest, runServerUntilExit, startServer, type RunningServer } from '../harness/server';
import { signIn } from '../harness/signal-client';

let home: Coturn;
let eu: Coturn;
let server: RunningServer;
let n = 0;

beforeAll(async () => {
  [home, eu] = await Promise.all([startCoturn(), startCoturn()]);
  server = await startServer({
    configToml: `trust_proxy = ["127.0.0.1"]

[turn]
urls = ${JSON.stringify(home.urls)}
secret = "${home.secret}"
ttl_seconds = 300

[[turn.regions]]
name = "eu"
urls = ${JSON.stringify(eu.urls)}
secret = "${eu.secret}"
clients = ["10.20.0.0/16", "127.0.0.0/8", "2001:db8:20::/48"]

[[turn.regions]]
name = "eu-lab"
urls = ${JSON.stringify(home.urls)}
clients = ["10.20.30.0/24"]
`,
  });
});
afterAll(async () => {
  await server?.stop();
  await Promise.allSettled([home?.stop(), eu?.stop()]);
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- HTTP bodies are checked field by field below
type Json = any;
/** GET /v1/calling/relays as a client at `from` behind the trusted proxy. */
async function relaysFrom(token: string, from: string): Promise<Json> {
  const res = await fetch(new URL('/v1/calling/relays', server.url), {
    headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': from },
  });
  expect(res.status).toBe(200);
  return res.json();
}

describe('relay credentials name the coturn instances of the client’s region', () => {
  it('routes by the longest matching client range, else the default; each credential works on its region’s coturn only', async () => {
    const who = await signIn(server, `region${++n}`);
    const inEu = await relaysFrom(who.token, '10.20.1.5');
    expect(inEu).toMatchObject({ region: 'eu', urls: eu.urls });
    expect(await turnAllocate(eu, inEu.username, inEu.password)).toMatchObject({ result: 'allocated' });
    // The other instance has another secret: the eu credential is refused there.
    expect(await turnAllocate(home, inEu.username, inEu.password)).toMatchObject({ result: 'refused', code: 401 });

    // 10.20.30.7 is in both 10.20.0.0/16 (eu) and 10.20.30.0/24 (eu-lab): the longer prefix wins.
    const inLab = await relaysFrom(who.token, '10.20.30.7');
    expect(inLab).toMatchObject({ region: 'eu-lab', urls: home.urls });
    expect(await turnAllocate(home, inLab.username, inLab.password)).toMatchObject({ result: 'allocated' });

    // IPv6, inside eu's /48.
    expect(await relaysFrom(who.token, '2001:db8:20:1::9')).toMatchObject({ region: 'eu', urls: eu.urls });

    // Nobody's range: the default relays ([turn] urls).
    const elsewhere = await relaysFrom(who.token, '198.51.100.9');
    expect(elsewhere).toMatchObject({ region: null, urls: home.urls });
    expect(await turnAllocate(home, elsewhere.username, elsewhere.password)).toMatchObject({ result: 'allocated' });
    expect(await turnAllocate(eu, elsewhere.username, elsewhere.password)).toMatchObject({ result: 'refused', code: 401 });

    // Audited with the region, never with a credential or a secret.
    const { events } = await adminRequest<{ events: { detail: Record<string, unknown> }[] }>(server.adminSocket, 'audit.query', {
      event: 'relay.credentials_issued',
      accountId: who.accountId,
    });
    expect(events.map((e) => e.detail.region).sort()).toEqual(['eu', 'eu', 'eu-lab', null].sort());
    for (const secret of [home.secret, eu.secret, inEu.password]) expect(server.stdout() + JSON.stringify(events)).not.toContain(secret);
    await who.client.close();
  });

  it('relay.credentials over the signaling socket routes by the socket’s address (127.0.0.1: eu)', async () => {
    const who = await signIn(server, `region${++n}`);
    const r = await who.client.request('relay.credentials', {});
    const turn = r.iceServers.find((s) => s.username)!;
    expect(turn.urls).toEqual(eu.urls);
    expect(await turnAllocate(eu, turn.username!, turn.credential!)).toMatchObject({ result: 'allocated' });
    await who.client.close();
  });

  it('refuses a routing table it cannot use, naming the key', async () => {
    const bad = async (regions: string, extra = '') =>
      (
        await runServerUntilExit({
          configToml: `[turn]\nurls = ["turn:127.0.0.1:3478"]\nsecret = "s"\n${extra}\n[[turn.regions]]\nname = "eu"\nurls = ["turn:127.0.0.1:3479"]\n${regions}\n`,
        })
      ).stderr;
    expect(await bad('clients = ["10.20.0.0/33"]')).toMatch(/turn\.regions\.0\.clients\.0: not a CIDR range/);
    expect(await bad('clients = []', 'default_region = "us"')).toMatch(/turn\.default_region: no \[\[turn\.regions\]\] is named "us"/);
  });
});
