/**
 * Chromium as an independent WebRTC peer: a page using the browser's own
 * RTCPeerConnection calls a Parley headless client through the real server.
 * Speech goes both ways (Chromium's fake microphone plays an espeak sentence;
 * Bob's microphone gets another), proving that Parley's media path (werift
 * ICE/DTLS-SRTP, Opus in RTP) interoperates with standard WebRTC.
 */
import { createServer, type Server } from 'node:http';
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SIMILARITY_THRESHOLD, speechSimilarity } from '../../main/media/analysis';
import { launchChromium, type RunningChromium } from '../harness/chromium';
import { startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir, run } from '../harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { REPO_ROOT, startServer, type RunningServer } from '../harness/server';
import { login, register, SignalClient } from '../harness/signal-client';
import { channel, readWav, renderSpeech } from '../harness/speech';

let pulse: Pulse;
let keyring: Keyring;
let server: RunningServer;
let bob: RunningClient;
let chrome: RunningChromium;
let pageServer: Server;
let pageUrl: string;
let dir: string;
let chromeSays: string;
let bobSays: string;

beforeAll(async () => {
  dir = makeTempDir('chromium-interop');
  [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
  server = await startServer();
  const raw = join(dir, 'chrome-raw.wav');
  chromeSays = join(dir, 'chrome-says.wav');
  bobSays = join(dir, 'bob-says.wav');
  await renderSpeech('Hello from the browser, can you hear me clearly now?', 'en-us', raw);
  // Chromium loops the file: a second of silence after the sentence separates the repetitions.
  await run('sox', [raw, chromeSays, 'pad', '0', '1']);
  await renderSpeech('Yes, I can hear you, and the line sounds good.', 'en-gb', bobSays);
  bob = await startClient({
    name: 'bob',
    server,
    env: { ...pulse.clientEnv('b'), ...keyring.env },
    input: 'b_mic',
    output: 'b_spk',
    autoAnswer: true,
  });
  const html = readFileSync(join(REPO_ROOT, 'test/fixtures/webrtc-peer.html'));
  // The page seals its SDP and candidates like a Parley client (Parley daemons refuse plain ones):
  // test/fixtures/browser-e2ee.ts, bundled for the browser.
  const e2ee = (
    await build({
      entryPoints: [join(REPO_ROOT, 'test/fixtures/browser-e2ee.ts')],
      bundle: true,
      format: 'iife',
      platform: 'browser',
      target: 'es2022',
      write: false,
    })
  ).outputFiles[0]!.contents;
  pageServer = createServer((req, res) =>
    req.url === '/e2ee.js'
      ? res.writeHead(200, { 'content-type': 'text/javascript' }).end(e2ee)
      : res.writeHead(200, { 'content-type': 'text/html' }).end(html),
  );
  await new Promise<void>((r) => pageServer.listen(0, '127.0.0.1', r));
  const addr = pageServer.address();
  pageUrl = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/`;
  chrome = await launchChromium({ fakeAudioWav: chromeSays });
});

afterAll(async () => {
  await chrome?.close();
  pageServer?.close();
  await bob?.stop();
  await server?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
  if (dir) removeTempDir(dir);
});

describe('Chromium ↔ Parley', () => {
  it('a browser call to a headless client carries speech both ways over standard WebRTC', async () => {
    await register(server.url, 'chrome');
    const device = await login(server.url, 'chrome');
    // Bob takes calls from contacts only (the default): the browser's account asks, Bob accepts.
    const helper = await SignalClient.connect(server.wsUrl);
    await helper.hello(await login(server.url, 'chrome', undefined, 'helper'));
    await helper.request('contacts.request', { username: 'bob' });
    await bob.request('accept_contact', { username: 'chrome' });
    await helper.close();
    const page = await chrome.browser.newPage();
    await page.goto(pageUrl);
    const callId = await page.evaluate(
      (o) => (globalThis as unknown as { startCall(x: object): Promise<string> }).startCall(o),
      { wsUrl: server.wsUrl, deviceId: device.deviceId, token: device.token, username: 'chrome', callee: 'bob' },
    );
    const active = await bob.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt, 20_000);
    expect(active.transport).toBe('host');
    // Chromium's DTLS certificate is the one whose fingerprint came sealed from the page.
    expect(active.e2ee).toMatchObject({ sealed: true, fingerprintBound: true });

    type Stats = {
      packetsReceived: number;
      packetsSent: number;
      codecs: string[];
      connectionState: string;
      remoteTimestamp?: number;
      now: number;
    };
    const readStats = () => page.evaluate(() => (globalThis as unknown as { inboundStats(): Promise<Stats> }).inboundStats());
    const rec = await pulse.record('probe.monitor', join(dir, 'probe.wav'), 4);
    await pulse.play('b_in', bobSays);
    // At least one full loop of the browser's sentence; meanwhile, what the browser read from Bob's sender reports.
    const senderReports = new Map<number, number>(); // remoteTimestamp → the browser's clock when it was read
    for (const until = Date.now() + 4000; Date.now() < until; await new Promise((r) => setTimeout(r, 200))) {
      const s = await readStats();
      if (s.remoteTimestamp !== undefined && !senderReports.has(s.remoteTimestamp)) senderReports.set(s.remoteTimestamp, s.now);
    }
    await rec.stop();
    const stats = await readStats();
    const remoteMaxRms = await page.evaluate(() => (globalThis as unknown as { parleyPeer: { remoteMaxRms: number } }).parleyPeer.remoteMaxRms);
    expect(stats.connectionState).toBe('connected');
    expect(stats.codecs).toContain('audio/opus');
    expect(stats.packetsReceived).toBeGreaterThan(150);
    expect(stats.packetsSent).toBeGreaterThan(150);
    // Bob's speech reached the browser's WebAudio (totalAudioEnergy stays 0 in headless
    // Chromium: it counts only audio played to an output device).
    expect(remoteMaxRms).toBeGreaterThan(0.01);
    // Bob's RTCP sender reports carry his wall clock in NTP format (RFC 3550 §4: a binary fraction of the second;
    // werift wrote its decimal digits, which a browser read as a whole second and 0–2.3 ms): each report the browser read
    // tells a time at most werift's report interval (0.5–1.5 s) and the read before it, and they do not all fall
    // on whole seconds.
    expect(senderReports.size).toBeGreaterThanOrEqual(2);
    for (const [remoteTimestamp, readAt] of senderReports) {
      expect(readAt - remoteTimestamp).toBeGreaterThan(-50);
      expect(readAt - remoteTimestamp).toBeLessThan(1500 + 250);
    }
    expect([...senderReports.keys()].map((t) => t % 1000).some((ms) => ms > 5)).toBe(true);

    // The browser's speech came out of Bob's speaker.
    const probe = readWav(join(dir, 'probe.wav'));
    const heard = channel(probe, PROBE_CHANNEL.bobSpeaker - 1);
    const sim = speechSimilarity(readWav(chromeSays).samples, heard, { maxLagMs: 6000 });
    expect(sim.score).toBeGreaterThan(SIMILARITY_THRESHOLD);

    await page.evaluate(() => (globalThis as unknown as { hangup(): Promise<unknown> }).hangup());
    const ended = await bob.waitForCall(callId, (s) => s.state === 'ended');
    expect(ended.endReason).toBe('hangup');
    await page.close();
  });
});
