/**
 * A standard WebRTC peer calls a Parley daemon the ArmorClaw guide's way:
 * Chromium runs a page with a plain RTCPeerConnection (no Parley code); the
 * test carries its offer to `webrtc.create_call` with `offer_sdp` through real
 * `socat`, gives the page the `answer_sdp`, and trickles the page's candidates
 * with `webrtc.send_candidates`. Speech goes both ways (Chromium's fake
 * microphone plays one sentence, the daemon's microphone another); the call
 * shows as not end-to-end verified.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../common/errors';
import { SIMILARITY_THRESHOLD, speechSimilarity } from '../../main/media/analysis';
import { launchChromium, type RunningChromium } from '../harness/chromium';
import { startClient, type RunningClient } from '../harness/client';
import { startKeyring, type Keyring } from '../harness/keyring';
import { makeTempDir, removeTempDir, run } from '../harness/process';
import { PROBE_CHANNEL, startPulse, type Pulse } from '../harness/pulse';
import { REPO_ROOT, startServer, type RunningServer } from '../harness/server';
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

type Reply = { id: unknown; result?: Record<string, unknown>; error?: { code: number; message: string; data: { name?: string } } };

/** One request through `socat -t 5` (the guide's form; -t: the answer needs ICE gathering), its one answer. */
function socat(socket: string, request: object): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const child = spawn('socat', ['-t', '5', '-', `UNIX-CONNECT:${socket}`], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as Reply) : reject(new Error(`socat exited ${code}: ${out}`))));
    child.stdin.end(JSON.stringify(request, null, 2));
  });
}

beforeAll(async () => {
  dir = makeTempDir('standard-peer');
  [pulse, keyring] = await Promise.all([startPulse(), startKeyring()]);
  server = await startServer();
  const raw = join(dir, 'chrome-raw.wav');
  chromeSays = join(dir, 'chrome-says.wav');
  bobSays = join(dir, 'bob-says.wav');
  await renderSpeech('Hello from the browser, can you hear me clearly now?', 'en-us', raw);
  // Chromium loops the file: a second of silence after the sentence separates the repetitions.
  await run('sox', [raw, chromeSays, 'pad', '0', '1']);
  await renderSpeech('Yes, I can hear you, and the line sounds good.', 'en-gb', bobSays);
  bob = await startClient({ name: 'bob', server, env: { ...pulse.clientEnv('b'), ...keyring.env }, input: 'b_mic', output: 'b_spk' });
  const html = readFileSync(join(REPO_ROOT, 'test/fixtures/plain-webrtc-peer.html'));
  pageServer = createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/html' }).end(html));
  await new Promise<void>((r) => pageServer.listen(0, '127.0.0.1', r));
  const addr = pageServer.address();
  pageUrl = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/`;
  chrome = await launchChromium({ fakeAudioWav: chromeSays });
}, 120_000);

afterAll(async () => {
  await chrome?.close();
  pageServer?.close();
  await bob?.stop();
  await server?.stop();
  await Promise.allSettled([keyring?.stop(), pulse?.stop()]);
  if (dir) removeTempDir(dir);
});

describe('a standard WebRTC peer through webrtc.create_call with offer_sdp', () => {
  it('refuses an offer that is not SDP with the guide error name, and keeps serving', async () => {
    // The guide's own placeholder offer, typed as written.
    const r = await socat(bob.socket, {
      jsonrpc: '2.0',
      id: 1,
      method: 'webrtc.create_call',
      params: { room_id: '!abc123:matrix.example.com', offer_sdp: 'v=0\\r\\no=- 123456 2 IN IP4 127.0.0.1\\r\\n...', user_id: '@user:matrix.example.com' },
    });
    expect(r.error).toMatchObject({ code: ErrorCode.INVALID_PARAMS, data: { name: 'ErrInvalidParams' } });
    expect((await socat(bob.socket, { jsonrpc: '2.0', id: 2, method: 'webrtc.list' })).result).toEqual({ calls: [] });
  });

  it('a plain browser page calls the daemon: answer_sdp, trickled candidates, speech both ways, not end-to-end verified', async () => {
    const page = await chrome.browser.newPage();
    await page.goto(pageUrl);
    const offer = await page.evaluate(() => (globalThis as unknown as { makeOffer(): Promise<string> }).makeOffer());
    const created = await socat(bob.socket, {
      jsonrpc: '2.0',
      id: 1,
      method: 'webrtc.create_call',
      params: { room_id: '!abc123:matrix.example.com', offer_sdp: offer, user_id: '@browser:example.org' },
    });
    expect(created.result).toMatchObject({ call_id: expect.any(String), answer_sdp: expect.stringMatching(/^v=0/), ttl: '30m' });
    const callId = created.result!.call_id as string;
    await page.evaluate((sdp) => (globalThis as unknown as { takeAnswer(s: string): Promise<void> }).takeAnswer(sdp), created.result!.answer_sdp as string);

    // Trickle: the page's candidates, in the guide's snake_case.
    await page.waitForFunction(() => (globalThis as unknown as { plainPeer: { gathered: boolean } }).plainPeer.gathered, undefined, { timeout: 5000 });
    const candidates = await page.evaluate(() => (globalThis as unknown as { plainPeer: { candidates: { candidate: string; sdpMid: string; sdpMLineIndex: number }[] } }).plainPeer.candidates);
    expect(candidates.length).toBeGreaterThan(0);
    const sent = await socat(bob.socket, {
      jsonrpc: '2.0',
      id: 3,
      method: 'webrtc.send_candidates',
      params: { call_id: callId, candidates: candidates.map((c) => ({ candidate: c.candidate, sdp_mid: c.sdpMid, sdp_mline_index: c.sdpMLineIndex })) },
    });
    expect(sent.result).toEqual({ success: true });

    const active = await bob.waitForCall(callId, (s) => s.state === 'active' && !!s.firstAudioAt, 20_000);
    expect(active.e2ee).toMatchObject({ sealed: false, fingerprintBound: false });
    const status = await socat(bob.socket, { jsonrpc: '2.0', id: 4, method: 'webrtc.get_call_status', params: { call_id: callId } });
    expect(status.result).toMatchObject({ call_id: callId, state: 'connected', user_id: 'browser', e2e_verified: false, room_id: '!abc123:matrix.example.com' });
    // The guide's step 2 on this call: it was answered by create_call already.
    expect((await socat(bob.socket, { jsonrpc: '2.0', id: 2, method: 'webrtc.answer_call', params: { call_id: callId } })).result).toEqual({ success: true });

    const rec = await pulse.record('probe.monitor', join(dir, 'probe.wav'), 4);
    await pulse.play('b_in', bobSays);
    await new Promise((r) => setTimeout(r, 4000)); // at least one full loop of the browser's sentence
    await rec.stop();

    type Stats = { packetsReceived: number; packetsSent: number; codecs: string[]; connectionState: string };
    const stats = await page.evaluate(() => (globalThis as unknown as { inboundStats(): Promise<Stats> }).inboundStats());
    const remoteMaxRms = await page.evaluate(() => (globalThis as unknown as { plainPeer: { remoteMaxRms: number } }).plainPeer.remoteMaxRms);
    expect(stats.connectionState).toBe('connected');
    expect(stats.codecs).toContain('audio/opus');
    expect(stats.packetsReceived).toBeGreaterThan(150);
    expect(stats.packetsSent).toBeGreaterThan(150);
    // The daemon's microphone reached the page's WebAudio.
    expect(remoteMaxRms).toBeGreaterThan(0.01);
    // The page's speech came out of the daemon's speaker.
    const heard = channel(readWav(join(dir, 'probe.wav')), PROBE_CHANNEL.bobSpeaker - 1);
    const sim = speechSimilarity(readWav(chromeSays).samples, heard, { maxLagMs: 6000 });
    expect(sim.score).toBeGreaterThan(SIMILARITY_THRESHOLD);

    expect((await socat(bob.socket, { jsonrpc: '2.0', id: 5, method: 'webrtc.end_call', params: { call_id: callId, reason: 'call completed' } })).result).toEqual({ success: true });
    const ended = await bob.waitForCall(callId, (s) => s.state === 'ended');
    expect(ended.endReason).toBe('hangup');
    const audit = await socat(bob.socket, { jsonrpc: '2.0', id: 6, method: 'webrtc.get_audit_log', params: { call_id: callId } });
    expect((audit.result!.entries as { event_type: string }[]).map((e) => e.event_type).reverse()).toEqual(['call_incoming', 'call_answered', 'call_connected', 'call_ended']);
    expect(audit.result!.entries).toContainEqual(expect.objectContaining({ event_type: 'call_connected', details: expect.objectContaining({ e2e_verified: false }) }));
    await page.close();
  }, 90_000);
});
