/**
 * `npm run dev:web [-- --data-dir DIR] [-- --loopback] [-- --json]`: the real
 * renderer in a browser, driving the real core (DESIGN.md: the development
 * bridge). Serves renderer/ through Vite (with hot reload) and the IPC
 * contract over a loopback WebSocket on the same origin; prints the page URL
 * (the token is in its fragment). With `--json`, the URL is printed as one
 * JSON line `{"url": …}` (the UI tests read it).
 *
 * Audio devices, keychain and server are the real ones of this machine.
 */
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createServer as createVite, type ViteDevServer } from 'vite';
import { keychainStore } from '../main/core/keychain-store';
import { Softphone } from '../main/core/softphone';
import { LocalAudio } from '../main/media/platform';
import { AudioRouter, logDeviceEvents } from '../main/media/audio-router';
import { startDevBridge } from '../main/app/dev-bridge';
import { startLinuxDesktop, type LinuxDesktop } from '../main/app/linux/desktop';

const { values: args } = parseArgs({
  options: {
    'data-dir': { type: 'string' },
    port: { type: 'string', default: '0' },
    loopback: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});

const dataDir =
  args['data-dir'] ?? process.env.PARLEY_DATA_DIR ?? join(process.env.XDG_CONFIG_HOME || join(homedir(), '.config'), 'parley');

async function main(): Promise<void> {
  // The device router follows PulseAudio (hot-plug, default changes) without touching a live call.
  const router = new AudioRouter();
  await router.start();
  logDeviceEvents(router, (line) => console.error(line));
  const audio = new LocalAudio(router);
  const phone = new Softphone({
    dataDir,
    secrets: keychainStore(),
    audio,
    sounds: {
      ringtone: resolve(import.meta.dirname, '../resources/sounds/ringtone.wav'),
      ringback: resolve(import.meta.dirname, '../resources/sounds/ringback.wav'),
    },
    media: { loopbackOnly: args.loopback },
    deviceName: 'Parley (browser bridge)',
  });
  phone.on('notice', (n) => console.error(`[${n.level}] ${n.message}`));

  const served: { vite?: ViteDevServer } = {};
  const bridge = await startDevBridge(phone, {
    port: Number(args.port),
    serve: (req, res, next) => (served.vite ? served.vite.middlewares(req, res, next) : next()),
    onInternalError: (method, e) => console.error(`[bridge] ${method} failed:`, e),
  });
  const vite = await createVite({
    configFile: false,
    root: resolve(import.meta.dirname, '../renderer'),
    plugins: [svelte()],
    logLevel: 'warn',
    // Vite's own client socket (hot reload) shares the bridge's origin, which the page's CSP allows.
    server: { middlewareMode: true, hmr: { server: bridge.server } },
    appType: 'spa',
  });

  served.vite = vite;
  await phone.start().catch((e: unknown) => console.error(`[dev:web] ${(e as Error).message}`));
  // Like the desktop app on Linux: Accept / Decline in the desktop's notifications, its
  // do-not-disturb followed, media players paused during calls (main/app/linux/desktop.ts).
  let desktop: LinuxDesktop | undefined;
  if (process.platform === 'linux' && process.env['DBUS_SESSION_BUS_ADDRESS']) {
    desktop = await startLinuxDesktop(phone, { warn: (m) => console.error(`[desktop] ${m}`), failed: (m) => console.error(`[desktop] ${m}`) });
    const n = desktop.notifications;
    if (n) console.error(`[desktop] notifications: ${n.server.name} ${n.server.version} (${n.supportsActions ? 'with' : 'without'} buttons)`);
  }
  if (args.json) console.log(JSON.stringify({ url: bridge.url }));
  else console.log(`Parley (dev bridge): open ${bridge.url}`);

  const stop = async () => {
    await desktop?.stop().catch(() => {});
    await phone.shutdown().catch(() => {});
    router.close();
    await vite.close();
    await bridge.close();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
}

main().catch((e: unknown) => {
  console.error(`dev:web: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
