import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { z } from 'zod';
import { ParleyError } from '../common/errors';
import type { PeerInfo } from '../common/protocol/signaling';
import type { AuditLog } from './audit';
import type { ServerConfig, TurnRegion } from './config';
import type { ServerMetrics } from './metrics';
import { TokenBuckets, type BucketStore } from './rate-limit';
import { issueTurnCredential } from './turn';

/**
 * What `GET /v1/calling/relays` answers (and what `relay.credentials` builds
 * its ICE servers from). Never logged; only `urls` and `ttl` reach the audit log.
 */
export interface RelayAnswer {
  username: string;
  password: string;
  /** Lifetime of the credential, seconds. */
  ttl: number;
  /** TURN URLs as configured (host names). */
  urls: string[];
  /** The same URLs with each host name replaced by its addresses, resolved now (IPv6 in brackets). */
  urlsWithIps: string[];
  /** The host name of the first URL (for TLS server name checks), or null. */
  hostname: string | null;
  /** When the credential stops working, Unix seconds. */
  expiresAt: number;
  /** The relay region chosen for the client's address (`[[turn.regions]]`), or null for `turn.urls`. */
  region: string | null;
}

/** The relays for one client: its region's, or the default ones. */
export interface RelayRoute {
  /** null: `turn.urls` (no region). */
  region: string | null;
  urls: string[];
  /** The coturn static-auth-secret that signs the credentials (never logged). */
  secret: string;
}

/** Each region's ranges as BlockLists, longest prefix first (built once per regions array). */
const routeTables = new WeakMap<TurnRegion[], { prefix: number; list: BlockList; family: 'ipv4' | 'ipv6'; region: TurnRegion }[]>();

/**
 * The relays for a client at `address` (Signal's relays endpoint: a routing
 * table of client CIDR ranges to relay regions): the region whose range holds
 * the address most specifically (longest prefix, RFC 4632 §5.1), else
 * `turn.default_region`, else `turn.urls`. An IPv4-mapped IPv6 address
 * (`::ffff:10.1.2.3`, RFC 4291 §2.5.5.2) counts as its IPv4 address; an
 * unknown or unparsable address gets the default.
 */
export function routeRelay(turn: ServerConfig['turn'], address: string | undefined): RelayRoute {
  const fallback = (): RelayRoute => {
    const r = turn.defaultRegion ? turn.regions.find((x) => x.name === turn.defaultRegion) : undefined;
    return r ? { region: r.name, urls: r.urls, secret: r.secret } : { region: null, urls: turn.urls, secret: turn.secret };
  };
  if (turn.regions.length === 0 || !address) return fallback();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const ip = mapped ? mapped[1]! : address;
  const v = isIP(ip);
  if (v === 0) return fallback();
  let table = routeTables.get(turn.regions);
  if (!table) {
    table = turn.regions
      .flatMap((region) =>
        region.clients.map((c) => {
          const list = new BlockList();
          list.addSubnet(c.address, c.prefix, c.family);
          return { prefix: c.prefix, list, family: c.family, region };
        }),
      )
      .sort((a, b) => b.prefix - a.prefix);
    routeTables.set(turn.regions, table);
  }
  const family = v === 4 ? 'ipv4' : 'ipv6';
  const hit = table.find((e) => e.family === family && e.list.check(ip, family));
  return hit ? { region: hit.region.name, urls: hit.region.urls, secret: hit.region.secret } : fallback();
}

/** What an external credential API must answer (provider `http`). */
const ProviderAnswer = z.object({
  username: z.string().min(1).max(1024),
  password: z.string().min(1).max(1024),
  ttl: z.number().int().positive(),
  urls: z.array(z.string().regex(/^turns?:/)).min(1),
});

/** `turn:host:port?query` → its parts (host without brackets). */
const TURN_URL = /^(turns?):(\[[^\]]+\]|[^:?]+)(:\d+)?(\?.*)?$/;

/** The host of a TURN URL, without brackets; undefined when the URL does not parse. */
export function turnHost(url: string): string | undefined {
  const m = TURN_URL.exec(url);
  return m ? m[2]!.replace(/^\[|\]$/g, '') : undefined;
}

/**
 * Each URL with its host name replaced by every address it resolves to now
 * (RFC 7065 URI syntax: an IPv6 address in brackets). IP literals stay; a
 * host that does not resolve is left out.
 */
export async function resolveTurnUrls(urls: string[]): Promise<string[]> {
  const out: string[] = [];
  const cache = new Map<string, string[]>();
  for (const url of urls) {
    const m = TURN_URL.exec(url);
    if (!m) continue;
    const [, scheme, rawHost, port = '', query = ''] = m;
    const host = rawHost!.replace(/^\[|\]$/g, '');
    let ips = cache.get(host);
    if (!ips) {
      ips = isIP(host)
        ? [host]
        : await lookup(host, { all: true }).then(
            (r) => r.map((a) => a.address),
            () => [],
          );
      cache.set(host, ips);
    }
    for (const ip of ips) out.push(`${scheme}:${isIP(ip) === 6 ? `[${ip}]` : ip}${port}${query}`);
  }
  return [...new Set(out)];
}

/**
 * Relay (TURN) credentials for signed-in devices, from the configured
 * provider: coturn's shared secret (REST API scheme, `server/turn.ts`) or an
 * external HTTP credential API. One per-account rate limit covers the HTTP
 * route and the signaling method together.
 *
 * Audit: `relay.credentials_issued` (ttl, urls; never the credential),
 * `rate_limited` (scope `relay`, once per episode), `relay.provider_error`
 * (status or failure kind only). A provider failure also increments
 * `parley_relay_provider_errors_total`.
 */
export class RelayService {
  private readonly buckets: TokenBuckets;
  private readonly limited = new Set<string>();

  constructor(
    private readonly config: ServerConfig,
    private readonly audit: AuditLog,
    private readonly metrics: ServerMetrics,
    /** Several nodes: the cluster's Redis, so that the request rate holds across nodes. */
    store?: BucketStore,
  ) {
    this.buckets = new TokenBuckets('parley:bucket:relay:', store);
  }

  /** True when relay credentials can be issued (a provider and URLs are configured). */
  get configured(): boolean {
    const t = this.config.turn;
    return t.provider === 'http' || t.urls.length > 0 || t.regions.length > 0;
  }

  /**
   * Issues credentials for the device, naming the relays of its region
   * ({@link routeRelay}) when `[[turn.regions]]` are configured.
   * @param address the client's address (through a trusted proxy: the one it
   *   named, `trust_proxy`); undefined: the default relays.
   * @throws ParleyError `rate_limited` (with `retryAfter`, seconds), `unavailable` (no relay
   *   configured), `internal_error` named `CALL_RELAY_PROVIDER_ERROR` (the provider failed).
   */
  async issue(peer: PeerInfo, address?: string): Promise<RelayAnswer> {
    await this.take(peer);
    const t = this.config.turn;
    if (!this.configured) {
      throw new ParleyError('unavailable', 'this server offers no relay', {
        name: 'CALL_RELAY_NOT_CONFIGURED',
      });
    }
    const experiment = t.experimentUrls.length > 0 && t.experimentAccounts.includes(peer.username);
    let answer: Omit<RelayAnswer, 'urlsWithIps' | 'hostname' | 'expiresAt' | 'region'>;
    let expiresAt: number;
    let region: string | null = null;
    if (t.provider === 'http') {
      answer = await this.fromProvider(peer);
      if (experiment) answer.urls = t.experimentUrls;
      expiresAt = Math.floor(Date.now() / 1000) + answer.ttl;
    } else {
      const route = routeRelay(t, address);
      if (route.urls.length === 0 && !experiment)
        throw new ParleyError('unavailable', 'this server offers no relay for your network', { name: 'CALL_RELAY_NOT_CONFIGURED' });
      region = experiment ? null : route.region;
      const c = issueTurnCredential(experiment ? t.secret : route.secret, peer.accountId, t.ttlSeconds);
      answer = {
        username: c.username,
        password: c.credential,
        ttl: t.ttlSeconds,
        urls: experiment ? t.experimentUrls : route.urls,
      };
      expiresAt = c.expiresAt;
    }
    const first = answer.urls[0];
    const result: RelayAnswer = {
      ...answer,
      urlsWithIps: await resolveTurnUrls(answer.urls),
      hostname: first ? (turnHost(first) ?? null) : null,
      expiresAt,
      region,
    };
    this.metrics.relayCredentialsIssued.inc();
    void this.audit.record({
      event: 'relay.credentials_issued',
      accountId: peer.accountId,
      deviceId: peer.deviceId,
      detail: { ttlSeconds: result.ttl, urls: result.urls, provider: t.provider, experiment, region },
    });
    return result;
  }

  private async take(peer: PeerInfo): Promise<void> {
    const t = this.config.turn;
    const verdict = await this.buckets.take(peer.accountId, t.requestsPerMinute / 60, t.requestBurst);
    if (verdict.ok) {
      this.limited.delete(peer.accountId);
      return;
    }
    const retryAfter = Math.ceil(verdict.retryAfter);
    if (!this.limited.has(peer.accountId)) {
      this.limited.add(peer.accountId);
      void this.audit.record({
        event: 'rate_limited',
        accountId: peer.accountId,
        deviceId: peer.deviceId,
        detail: { scope: 'relay', retryAfter },
      });
    }
    throw new ParleyError(
      'rate_limited',
      `too many relay credential requests; try again in ${retryAfter} s`,
      { retryAfter, name: 'CALL_RELAY_RATE_LIMITED' },
    );
  }

  private async fromProvider(
    peer: PeerInfo,
  ): Promise<Omit<RelayAnswer, 'urlsWithIps' | 'hostname' | 'expiresAt' | 'region'>> {
    const t = this.config.turn;
    const fail = (kind: string): ParleyError => {
      this.metrics.relayProviderErrors.inc();
      void this.audit.record({
        event: 'relay.provider_error',
        accountId: peer.accountId,
        deviceId: peer.deviceId,
        detail: { failure: kind },
      });
      return new ParleyError('internal_error', 'the relay credential service failed; try again', {
        name: 'CALL_RELAY_PROVIDER_ERROR',
      });
    };
    const url = new URL(t.providerUrl);
    url.searchParams.set('accountId', peer.accountId);
    let res: Response;
    try {
      res = await fetch(url, { signal: AbortSignal.timeout(t.providerTimeoutMs) });
    } catch (e) {
      throw fail((e as Error).name === 'TimeoutError' ? 'timeout' : 'unreachable');
    }
    if (!res.ok) {
      await res.body?.cancel().catch(() => {});
      throw fail(`status ${res.status}`);
    }
    const parsed = ProviderAnswer.safeParse(await res.json().catch(() => undefined));
    if (!parsed.success) throw fail('invalid answer');
    return parsed.data;
  }
}
