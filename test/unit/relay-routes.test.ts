import { describe, expect, it } from 'vitest';
import { parseCidr, type ServerConfig } from '../../server/config';
import { routeRelay } from '../../server/relays';

const turn = (over: Partial<ServerConfig['turn']> = {}): ServerConfig['turn'] => ({
  urls: ['turn:default.example:3478'],
  secret: 'default-secret',
  ttlSeconds: 600,
  provider: 'coturn',
  providerUrl: '',
  providerTimeoutMs: 3000,
  requestsPerMinute: 30,
  requestBurst: 10,
  experimentAccounts: [],
  experimentUrls: [],
  regions: [
    { name: 'eu', urls: ['turn:eu.example:3478'], secret: 'eu-secret', clients: ['10.20.0.0/16', '2001:db8:20::/48'].map((c) => parseCidr(c)!) },
    { name: 'eu-lab', urls: ['turn:lab.example:3478'], secret: 'default-secret', clients: [parseCidr('10.20.30.0/24')!] },
    { name: 'us', urls: ['turn:us.example:3478'], secret: 'us-secret', clients: [parseCidr('192.0.2.7')!] },
  ],
  defaultRegion: undefined,
  ...over,
});

describe('routeRelay: the relays of a client address (longest prefix, then the default)', () => {
  it.each([
    ['10.20.1.5', 'eu'],
    ['10.20.30.7', 'eu-lab'], // inside both; /24 beats /16
    ['10.21.0.1', null],
    ['::ffff:10.20.30.1', 'eu-lab'], // IPv4-mapped IPv6 counts as IPv4
    ['2001:db8:20:ffff::1', 'eu'],
    ['2001:db8:21::1', null],
    ['192.0.2.7', 'us'], // a bare address is a /32
    ['192.0.2.8', null],
    ['not an address', null],
    [undefined, null],
  ])('%s → %s', (address, region) => {
    const r = routeRelay(turn(), address);
    expect(r.region).toBe(region);
    expect(r.urls).toEqual(region === null ? ['turn:default.example:3478'] : turn().regions.find((x) => x.name === region)!.urls);
  });

  it('signs with the region’s own secret', () => {
    expect(routeRelay(turn(), '10.20.1.5').secret).toBe('eu-secret');
    expect(routeRelay(turn(), '198.51.100.1').secret).toBe('default-secret');
  });

  it('sends addresses no range holds to default_region when one is set', () => {
    expect(routeRelay(turn({ defaultRegion: 'us' }), '198.51.100.1')).toMatchObject({ region: 'us', urls: ['turn:us.example:3478'] });
  });
});

describe('parseCidr', () => {
  it.each([
    ['10.0.0.0/8', { address: '10.0.0.0', prefix: 8, family: 'ipv4' }],
    ['2001:db8::/32', { address: '2001:db8::', prefix: 32, family: 'ipv6' }],
    ['192.0.2.1', { address: '192.0.2.1', prefix: 32, family: 'ipv4' }],
  ])('%s', (text, parsed) => expect(parseCidr(text)).toMatchObject(parsed));
  it.each(['10.0.0.0/33', '2001:db8::/129', '10.0.0/8', 'eu', '10.0.0.0/8/1', '10.0.0.0/-1', '10.0.0.0/'])('refuses %s', (text) =>
    expect(parseCidr(text)).toBeUndefined(),
  );
});
