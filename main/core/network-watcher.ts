import { EventEmitter } from 'node:events';
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';

/** What changed in the host's addresses between two looks, as `interface address/prefix` strings. */
export interface NetworkChange {
  added: string[];
  removed: string[];
}

/** The host's interfaces as `os.networkInterfaces()` returns them. */
export type InterfaceTable = NodeJS.Dict<NetworkInterfaceInfo[]>;

/**
 * The addresses a call's media could use, as sorted `interface address/prefix`
 * strings: every non-internal interface's (loopback is left out: it never
 * changes under a call).
 */
export function mediaAddresses(table: InterfaceTable): string[] {
  const out: string[] = [];
  for (const [name, infos] of Object.entries(table)) {
    for (const info of infos ?? []) if (!info.internal) out.push(`${name} ${info.cidr ?? info.address}`);
  }
  return out.sort();
}

/**
 * Watches the host's network interfaces and addresses (Wi-Fi to Ethernet, a
 * VPN coming up, a new DHCP lease, a link moved) by polling
 * `os.networkInterfaces()` (getifaddrs(3): one syscall, no subprocess) every
 * `intervalMs`, and emits `change` with what was added and removed. A call
 * then gathers anew and restarts ICE at once instead of waiting for its
 * media to stall.
 */
export class NetworkWatcher extends EventEmitter<{ change: [NetworkChange] }> {
  private timer: NodeJS.Timeout | undefined;
  private last: string[];
  private readonly read: () => InterfaceTable;
  private readonly intervalMs: number;

  /**
   * @param options.intervalMs how often to look, ms (default 500).
   * @param options.read the interface table source (tests); default `os.networkInterfaces`.
   */
  constructor(options: { intervalMs?: number; read?: () => InterfaceTable } = {}) {
    super();
    this.read = options.read ?? networkInterfaces;
    this.intervalMs = options.intervalMs ?? 500;
    this.last = mediaAddresses(this.read());
  }

  /** Starts polling (idempotent); the timer never keeps the process alive. */
  start(): void {
    if (this.timer) return;
    this.last = mediaAddresses(this.read());
    this.timer = setInterval(() => this.poll(), this.intervalMs);
    this.timer.unref();
  }

  /** Stops polling. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Looks once; emits `change` when the address set differs from the last look. */
  poll(): void {
    let now: string[];
    try {
      now = mediaAddresses(this.read());
    } catch {
      return; // the table could not be read this time; look again next tick
    }
    const before = new Set(this.last);
    const after = new Set(now);
    const added = now.filter((a) => !before.has(a));
    const removed = this.last.filter((a) => !after.has(a));
    this.last = now;
    if (added.length > 0 || removed.length > 0) this.emit('change', { added, removed });
  }
}
