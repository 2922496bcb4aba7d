import type { NetworkInterfaceInfo } from 'node:os';
import { describe, expect, it } from 'vitest';
import { NetworkWatcher, mediaAddresses, type InterfaceTable } from '../../main/core/network-watcher';

const v4 = (address: string, internal = false): NetworkInterfaceInfo => ({
  address,
  netmask: '255.255.255.0',
  family: 'IPv4',
  mac: '00:00:00:00:00:00',
  internal,
  cidr: `${address}/24`,
});

describe('NetworkWatcher', () => {
  it('lists the non-internal addresses, sorted, and leaves loopback out', () => {
    expect(mediaAddresses({ lo: [v4('127.0.0.1', true)], wlan0: [v4('192.168.1.20')], eth0: [v4('10.0.0.5')] })).toEqual([
      'eth0 10.0.0.5/24',
      'wlan0 192.168.1.20/24',
    ]);
  });

  it('reports a new address, a removed one and a link moved to another interface, and nothing when nothing changed', () => {
    let table: InterfaceTable = { lo: [v4('127.0.0.1', true)], veth0: [v4('10.18.0.2')] };
    const w = new NetworkWatcher({ read: () => table });
    const seen: unknown[] = [];
    w.on('change', (c) => seen.push(c));
    w.poll();
    expect(seen).toEqual([]);
    table = { ...table, veth0: [v4('10.18.0.3')] };
    w.poll();
    expect(seen.at(-1)).toEqual({ added: ['veth0 10.18.0.3/24'], removed: ['veth0 10.18.0.2/24'] });
    table = { lo: table.lo, veth1: [v4('10.18.0.3')] };
    w.poll();
    expect(seen.at(-1)).toEqual({ added: ['veth1 10.18.0.3/24'], removed: ['veth0 10.18.0.3/24'] });
    w.poll();
    expect(seen).toHaveLength(2);
    // Loopback changes are not a network change for a call.
    table = { ...table, lo: [v4('127.0.0.1', true), v4('127.0.0.2', true)] };
    w.poll();
    expect(seen).toHaveLength(2);
  });
});
