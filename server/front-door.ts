import { isIPv4, isIPv6 } from 'node:net';

/**
 * The front doors of the server: what an anonymous client can reach before
 * it has signed in.
 */

/**
 * The address a client is counted under: IPv4 as it is (an IPv4-mapped IPv6
 * address as its IPv4), IPv6 as its /64 prefix (one subscriber usually holds a
 * whole /64, RFC 6177), anything else as given.
 */
export function clientKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1] as string;
  if (isIPv4(ip) || !isIPv6(ip)) return ip;
  const bare = ip.split('%')[0] as string;
  const [head = '', tail] = bare.split('::');
  const headParts = head ? head.split(':') : [];
  const tailParts = tail ? tail.split(':') : [];
  const missing = tail === undefined ? 0 : 8 - headParts.length - tailParts.length;
  const groups = [...headParts, ...Array<string>(Math.max(0, missing)).fill('0'), ...tailParts];
  return `${groups
    .slice(0, 4)
    .map((g) => (parseInt(g, 16) || 0).toString(16))
    .join(':')}::/64`;
}
