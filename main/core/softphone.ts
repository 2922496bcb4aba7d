import { EventEmitter } from 'node:events';
import type { CallStatus } from '../../common/protocol/control';
import { ParleyError } from '../../common/errors';
import type {
  AudioDevice,
  Contact,
  HistoryEntry,
  IpcEvent,
  IpcEventName,
  MicState,
  RoomInvite,
  SessionInfo,
  Settings,
  UiRoom,
} from '../../common/ipc/contract';
import type { ContactsListResult } from '../../common/protocol/signaling';
import { forgetSession, loadSession, login, register, tokenKey, type SecretStore, type Session } from './account';
import { ContactBook } from './contacts';
import { DeviceSessions } from './devices';
import { CallEngine, type MediaConfig } from './call-engine';
import { HistoryStore, historyEntryOf } from './history';
import { MicControl } from './microphone';
import { GroupCalls } from './group-calls';
import { roomClientBeside, type RoomClient } from './room-client';
import { SettingsStore } from './settings';
import { SignalingClient } from './signaling-client';
import { DeviceIdentity, identityOwner, startEndToEnd, type EndToEnd } from './e2ee';
import type { AccountDevicesStatus, SafetyNumberResult, TrustInfo } from '../../common/protocol/control';
import {
  meterMicrophone,
  playPcm,
  renderCadence,
  RINGBACK,
  RINGTONE,
  TEST_TONE,
  type PlayingSound,
} from '../media/tones';
import { readWavFile, setStreamRole } from '../../native/audio-device';
import { raiseMediaPriority, type PriorityResult } from '../media/priority';
import { MediaWorkerHost, mediaWorkerAvailable } from '../media/worker/host';
import { DEFAULT_OPUS, mediaPlatform, type LocalAudio, type OpusSettings } from '../media/platform';
import type { DeviceList } from '../media/audio-router';

export interface SoftphoneOptions {
  /** Profile, settings and history live here (no secrets). */
  dataDir: string;
  /** The OS keychain (native/keychain): the device token lives only there. */
  secrets: SecretStore;
  /**
   * The local audio: the device router (PulseAudio devices, follow-default,
   * fall-back, mid-call switching) and voice processing. Started by the caller.
   */
  audio: LocalAudio;
  /** Opus settings (default DEFAULT_OPUS). */
  opus?: OpusSettings;
  /** Media settings for calls (defaults: 20 ms frames, adaptive jitter buffer, 30 s media timeout). */
  media?: Partial<MediaConfig>;
  /** Ringtone and ringback WAV files (resources/sounds); the built-in cadences when absent. */
  sounds?: { ringtone?: string; ringback?: string };
  /** Name this device gets on the server at sign-in. */
  deviceName?: string;
  /** Answer every incoming call (automation only). */
  autoAnswer?: boolean;
  /**
   * Where 1:1 calls' media runs: `worker` (default: a thread of its own,
   * main/media/worker/, when its code is there) or `main` (this thread).
   */
  mediaThread?: 'worker' | 'main';
}

type SoftphoneEvents = { [E in IpcEventName]: [IpcEvent<E>] };

const DEFAULT_MEDIA: MediaConfig = {
  frameMs: 20,
  forceRelay: false,
  loopbackOnly: false,
  connectTimeoutMs: 15_000,
  mediaTimeoutMs: 30_000,
  dtx: false,
};

/**
 * The softphone as the desktop app sees it (DESIGN.md "Data flow": CallEngine,
 * SignalingClient, contacts, history, settings): one object behind the typed
 * IPC contract (common/ipc), used by Electron's main process and by the
 * development bridge alike. It never imports Electron.
 *
 * Emits the contract's events (`session`, `call`, `stats`, `contacts`,
 * `history`, `settings`, `mic`, `levels`, `devices`, `notice`). Methods throw
 * ParleyError with a stable `reason` and a message for the user.
 */
export class Softphone extends EventEmitter<SoftphoneEvents> {
  private readonly settingsStore: SettingsStore;
  private readonly historyStore: HistoryStore;
  private readonly mic: MicControl;
  private session: Session | undefined;
  private signaling: SignalingClient | undefined;
  /** What the media thread's priority request got (main/media/priority.ts); undefined until it answered. */
  mediaPriority: PriorityResult | undefined;
  /** The media thread, made on first use; null when calls run on this thread (asked for, or its code is missing). */
  private mediaWorker: MediaWorkerHost | null | undefined;
  private engine: CallEngine | undefined;
  /** Group calls: the one RoomClient beside the engine, and the desktop's view of it. */
  private rooms: RoomClient | undefined;
  private groups: GroupCalls | undefined;
  private book: ContactBook | undefined;
  private deviceSessions: DeviceSessions | undefined;
  private e2ee: EndToEnd | undefined;
  private connection: SessionInfo['connection'] = 'offline';
  private connectionDetail: string | undefined;
  /** Incoming calls that do not ring (do-not-disturb, or a silenced contact). */
  private readonly silencedCalls = new Set<string>();
  private contactList: Contact[] = [];
  /** The ringtone or ringback playing now, and for which call. */
  private tone: { callId: string; playing: Promise<PlayingSound | undefined> } | undefined;
  private micTest: (() => Promise<void>) | undefined;

  constructor(private readonly options: SoftphoneOptions) {
    super();
    this.settingsStore = SettingsStore.at(options.dataDir);
    this.historyStore = HistoryStore.at(options.dataDir);
    this.mic = new MicControl((s) => this.onMic(s));
    const router = options.audio.router;
    router.on('devices', (list) => this.emit('devices', devicesOf(list)));
    // During a call the call itself carries the device warning (and drops it when the device is back); otherwise a notice says it.
    router.on('warning', (w) => {
      if (!this.engine?.list().some((c) => c.state !== 'ended')) this.emit('notice', { level: 'warning', message: w.message });
    });
    // The device is back: an info notice takes the warning's place (and goes away by itself).
    router.on('cleared', (c) => this.emit('notice', { level: 'info', message: c.message }));
  }

  /** Loads settings and history and, when this device is signed in, goes online. Never throws for a missing sign-in. */
  async start(): Promise<void> {
    const notice = (message: string) => this.emit('notice', { level: 'warning', message });
    const settings = await this.settingsStore.load(notice);
    await this.historyStore.load(notice);
    this.mic.setPushToTalk(settings.pushToTalk.enabled);
    setStreamRole(settings.phoneRole ? 'phone' : undefined);
    await this.applyDevices(settings).catch((e: unknown) =>
      notice(`${(e as Error).message}; using the system default until it is back`),
    );
    try {
      this.session = await loadSession(this.options.dataDir, this.options.secrets);
    } catch (e) {
      if (!(e instanceof ParleyError && e.reason === 'unauthenticated')) throw e;
      return;
    }
    await this.goOnline();
  }

  // ---- session -------------------------------------------------------------

  sessionInfo(): SessionInfo {
    return {
      signedIn: !!this.session,
      ...(this.session ? { username: this.session.username, serverUrl: this.session.serverUrl } : {}),
      connection: this.session ? this.connection : 'offline',
      ...(this.connectionDetail && this.session ? { detail: this.connectionDetail } : {}),
    };
  }

  /** Creates an account and signs this device in. */
  async register(serverUrl: string, username: string, password: string): Promise<SessionInfo> {
    await register(serverUrl, username, password);
    return this.signIn(serverUrl, username, password);
  }

  /** Signs this device in (token to the keychain) and goes online. Signs out a previous account first. */
  async signIn(serverUrl: string, username: string, password: string): Promise<SessionInfo> {
    if (this.session) await this.signOut();
    this.session = await login(
      serverUrl,
      username,
      password,
      this.options.dataDir,
      this.options.secrets,
      this.options.deviceName ?? 'Parley desktop',
    );
    await this.goOnline();
    return this.sessionInfo();
  }

  /** Ends any call, goes offline and removes the token from the keychain. */
  async signOut(): Promise<SessionInfo> {
    const session = this.session;
    // Ends this device's session on the server too (its token stops working); offline, only locally.
    // The server then says the session ended: that is this sign-out, not news for the user.
    this.deviceSessions?.removeAllListeners('ended');
    await this.deviceSessions?.logout().catch(() => {});
    await this.goOffline();
    this.session = undefined;
    if (session) {
      await forgetSession(this.options.dataDir, this.options.secrets, session);
      await DeviceIdentity.forget(this.options.secrets, identityOwner(session)).catch(() => false);
    }
    this.contactList = [];
    this.emit('contacts', { contacts: [] });
    this.publishSession();
    return this.sessionInfo();
  }

  // ---- calls -----------------------------------------------------------------

  async startCall(to: string): Promise<string> {
    return this.requireEngine().createCall(to);
  }

  async answer(callId?: string): Promise<string> {
    return this.requireEngine().answer(callId);
  }

  async decline(callId?: string): Promise<string> {
    return this.requireEngine().reject(callId, 'declined');
  }

  async hangup(callId?: string): Promise<string> {
    return this.requireEngine().end(callId);
  }

  hold(callId: string | undefined, held: boolean): string {
    return this.requireEngine().setHold(callId, held);
  }

  calls(): (CallStatus & { silenced?: boolean })[] {
    return (this.engine?.list() ?? []).map((c) => this.decorate(c));
  }

  // ---- group calls (issue 14) -------------------------------------------------------

  /**
   * Starts a group call with `invite` (usernames; none: an empty room to add people to).
   * @throws ParleyError `invalid_state` (a call is live), `unavailable` (no SFU), `device_error`, and the
   *   server's `forbidden`, `unknown_user`, `room_full`, `rate_limited` for the invitations.
   */
  createRoom(invite: string[]): Promise<UiRoom> {
    return this.requireGroups().create(invite);
  }

  /** Joins a group call (the ringing one, or by id). @throws ParleyError `not_found`, `room_full`, `room_ended`, `invalid_state`, `device_error`. */
  joinRoom(roomId: string): Promise<UiRoom> {
    return this.requireGroups().join(roomId);
  }

  /** Leaves the group call. @throws ParleyError `invalid_state` when in none. */
  async leaveRoom(): Promise<string> {
    return this.requireGroups().leave();
  }

  /** Rings more people into the group call. @throws ParleyError `invalid_state`, `forbidden`, `unknown_user`, `room_full`, `rate_limited`. */
  inviteToRoom(usernames: string[]): Promise<{ invited: string[] }> {
    return this.requireGroups().invite(usernames);
  }

  /** Declines a ringing group call (our other devices stop ringing too). @throws ParleyError `not_found`. */
  declineRoom(roomId: string): Promise<void> {
    return this.requireGroups().decline(roomId);
  }

  /** The group call we are in or were in last (null: none yet), and the group calls ringing here. */
  roomInfo(): { room: UiRoom | null; invites: RoomInvite[] } {
    return { room: this.groups?.current() ?? null, invites: this.groups?.invites() ?? [] };
  }

  /** The ringtone follows the oldest group call ringing here (unless silenced, or a call is on). */
  private onRoomInvites(invites: RoomInvite[]): void {
    this.emit('roomInvites', { invites });
    const ringing = invites.find((i) => !i.silenced);
    const busy = this.engine?.list().some((c) => c.state !== 'ended') || this.rooms?.busyWith();
    if (ringing && !busy) this.startTone(ringing.roomId, 'ringtone');
    else if (this.tone && !this.engine?.list().some((c) => c.callId === this.tone?.callId)) void this.stopTone();
  }

  private requireGroups(): GroupCalls {
    if (!this.groups) throw new ParleyError('unauthenticated', 'sign in first');
    return this.groups;
  }

  // ---- end-to-end security: trust and safety numbers (docs/SECURITY.md) --------------

  /**
   * The safety number with a contact: `{username, safetyNumber: "12345 …" (12 groups of 5),
   * digits (60, for a QR code), verified}`.
   * @throws ParleyError `key_changed` (accept the change first), `not_contact`, `unknown_user`, `unauthenticated`.
   */
  safetyNumber(username: string): Promise<SafetyNumberResult> {
    return this.requireE2ee().safetyNumber(username);
  }

  /** Marks a contact verified after comparing the safety number. @throws ParleyError `key_changed`, `not_found`. */
  verifyContact(username: string): TrustInfo {
    return this.requireE2ee().verify(username);
  }

  /** Accepts a contact's changed keys (calls work again; the verified mark stays cleared). @throws ParleyError `not_found`. */
  acceptKeyChange(username: string): TrustInfo {
    return this.requireE2ee().acceptKeyChange(username);
  }

  /** The pinned device keys of a contact, verified mark and pending change. @throws ParleyError `not_found`. */
  trustInfo(username: string): TrustInfo {
    return this.requireE2ee().trustInfo(username);
  }

  /**
   * My account's devices as this device sees them (the server's list reviewed now):
   * `{role: 'holder' | 'linked' | 'unlinked', accountKey?, approved[], alarms[]}`.
   * @throws ParleyError `unauthenticated`, `unavailable` (offline).
   */
  accountDevices(): Promise<AccountDevicesStatus> {
    return this.requireE2ee().accountDevices();
  }

  /**
   * On the device that holds the account key: a one-time link code (20 characters, valid until
   * `expiresAt`, Unix ms) for a new device of this account.
   * @throws ParleyError `forbidden` (this device does not hold the account key), `unauthenticated`, `unavailable`.
   */
  startDeviceLink(): Promise<{ code: string; expiresAt: number }> {
    return this.requireE2ee().startLink();
  }

  /**
   * Links this new device with the code shown on the device holding the account key.
   * @throws ParleyError `invalid_params`, `not_found`, `security`, `unavailable`, `unauthenticated`.
   */
  linkDevice(code: string): Promise<{ accountKey: string; deviceId: string }> {
    return this.requireE2ee().link(code);
  }

  /**
   * Recovery when no device holds the account key: a new one on this device. Every contact is
   * warned (an account-key change they must accept); the other devices must be linked again.
   * @throws KeychainUnavailableError; ParleyError `unauthenticated`, `unavailable`.
   */
  resetAccountKey(): Promise<{ accountKey: string }> {
    return this.requireE2ee().resetAccountKey();
  }

  private requireE2ee(): EndToEnd {
    if (!this.e2ee) throw new ParleyError('unauthenticated', 'sign in first');
    return this.e2ee;
  }

  // ---- microphone ------------------------------------------------------------

  micState(): MicState {
    return this.mic.state();
  }

  setMuted(muted: boolean): MicState {
    return this.mic.setMuted(muted);
  }

  /** The push-to-talk key went down/up (window key events, or the global hook in main/app). */
  pushToTalk(pressed: boolean): MicState {
    return this.mic.setPressed(pressed);
  }

  /** The key source lost track of the key (hook died, focus lost while held): the microphone closes. */
  pushToTalkUncertain(): MicState {
    return this.mic.releaseUncertain();
  }

  /** Which mechanism delivers the push-to-talk key (shown in settings). */
  setPushToTalkMechanism(m: MicState['pttMechanism']): MicState {
    return this.mic.setMechanism(m);
  }

  // ---- history, settings, devices ----------------------------------------------

  history(limit = 100): HistoryEntry[] {
    return this.historyStore.list(limit);
  }

  async clearHistory(): Promise<void> {
    await this.historyStore.clear();
    this.emit('history', { entries: this.historyStore.list() });
  }

  settings(): Settings {
    return this.settingsStore.get();
  }

  /**
   * Changes settings. Push-to-talk and volume apply at once; a new microphone
   * or speaker moves the live call to it (the call goes on).
   * @throws ParleyError `device_error` naming the devices there are, for an unknown device (nothing changes then).
   */
  async updateSettings(patch: Partial<Settings>): Promise<Settings> {
    if (patch.inputDevice !== undefined || patch.outputDevice !== undefined) {
      await this.applyDevices({ ...this.settingsStore.get(), ...patch });
    }
    const next = await this.settingsStore.update(patch);
    if (patch.pushToTalk) this.mic.setPushToTalk(next.pushToTalk.enabled);
    if (patch.phoneRole !== undefined) setStreamRole(next.phoneRole ? 'phone' : undefined);
    if (patch.outputVolume !== undefined) this.engine?.setOutputGain(next.outputVolume);
    if (patch.doNotDisturb !== undefined) void this.book?.setPresence(next.doNotDisturb ? 'dnd' : 'online').catch(() => {});
    this.emit('settings', next);
    return next;
  }

  /** The audio devices (PulseAudio's, kept current by the router). */
  devices(): { inputs: AudioDevice[]; outputs: AudioDevice[] } {
    return devicesOf(this.options.audio.router.list());
  }

  /** Points the router at the chosen devices (null = system default); moves a live call's streams. */
  private async applyDevices(s: Pick<Settings, 'inputDevice' | 'outputDevice'>): Promise<void> {
    try {
      await this.options.audio.router.choose({ input: s.inputDevice ?? 'default', output: s.outputDevice ?? 'default' });
    } catch (e) {
      throw new ParleyError('device_error', (e as Error).message);
    }
  }

  /** A device id as native/audio-device names it (PulseAudio names get the `pulse:` prefix). */
  private outputName(id: string | null): string | undefined {
    if (!id) return undefined;
    return this.options.audio.router.pulse ? `pulse:${id}` : id;
  }

  // ---- contacts ----------------------------------------------------------------

  contacts(): Contact[] {
    return this.contactList;
  }

  /** Sends a contact request to `username` (or accepts theirs, making us contacts at once). */
  async addContact(username: string): Promise<void> {
    await this.requireBook().request(username);
  }

  async acceptContact(username: string): Promise<void> {
    await this.requireBook().accept(username);
  }

  /** Removes a contact, withdraws our request, or declines theirs. */
  async removeContact(username: string): Promise<void> {
    const c = this.contactList.find((x) => x.username === username);
    if (c?.relation === 'incoming') await this.requireBook().decline(username);
    else await this.requireBook().remove(username);
  }

  /** Blocks (their calls then get what an offline user gives; they see us offline) or unblocks. */
  async blockContact(username: string, blocked: boolean): Promise<void> {
    if (blocked) await this.requireBook().block(username);
    else await this.requireBook().unblock(username);
  }

  /** Per-contact "don't ring": kept on this device; their calls still arrive and are logged as missed. */
  async silenceContact(username: string, silenced: boolean): Promise<void> {
    const list = new Set(this.settingsStore.get().silenced);
    if (silenced) list.add(username);
    else list.delete(username);
    await this.updateSettings({ silenced: [...list].sort() });
    this.contactList = this.contactList.map((c) => (c.username === username ? { ...c, silenced } : c));
    this.emit('contacts', { contacts: this.contactList });
  }

  private requireBook(): ContactBook {
    if (!this.book) throw new ParleyError('unauthenticated', 'sign in first');
    return this.book;
  }

  /** The server's book as the contact list shows it (silenced from this device's settings). */
  private onBook(book: ContactsListResult): void {
    const silenced = new Set(this.settingsStore.get().silenced);
    const entry = (username: string, relation: Contact['relation'], presence: Contact['presence'] = 'offline'): Contact => ({
      username,
      relation,
      presence,
      silenced: silenced.has(username),
    });
    // One entry per account; a block wins over any other relation (the server may keep the contact underneath).
    const blocked = new Set(book.blocked.map((c) => c.username));
    const unblocked = <T extends { username: string }>(list: T[]) => list.filter((c) => !blocked.has(c.username));
    this.contactList = [
      ...unblocked(book.contacts).map((c) => entry(c.username, 'accepted', c.presence)),
      ...unblocked(book.incoming).map((c) => entry(c.username, 'incoming')),
      ...unblocked(book.outgoing).map((c) => entry(c.username, 'outgoing')),
      ...book.blocked.map((c) => entry(c.username, 'blocked')),
    ].sort((x, y) => x.username.localeCompare(y.username));
    this.emit('contacts', { contacts: this.contactList });
  }

  // ---- tones and meters ------------------------------------------------------------

  /** Plays the 1 s test tone on the call output or the ringing output. */
  async testTone(target: 'output' | 'ring'): Promise<void> {
    const s = this.settingsStore.get();
    const device = this.outputName(target === 'ring' ? s.ringDevice : s.outputDevice);
    const gain = (target === 'ring' ? s.ringVolume : s.outputVolume) * 0.5;
    try {
      const tone = await playPcm(renderCadence(TEST_TONE, gain), { device });
      await tone.done;
    } catch (e) {
      throw new ParleyError('device_error', `cannot play on that output: ${(e as Error).message}`);
    }
  }

  /** Starts or stops the microphone test: `levels` events at 20 Hz while on. */
  async testMic(on: boolean): Promise<void> {
    const running = this.micTest;
    this.micTest = undefined;
    if (running) await running();
    if (!on) return;
    if (this.engine?.list().some((c) => c.state !== 'ended') || this.rooms?.busyWith()) {
      throw new ParleyError('invalid_state', 'the microphone test is not available during a call');
    }
    const input = this.settingsStore.get().inputDevice;
    const device = input && this.options.audio.router.pulse ? `pulse:${input}` : (input ?? undefined);
    try {
      this.micTest = await meterMicrophone(device, (inputDbfs) => this.emit('levels', { inputDbfs, outputDbfs: -100 }));
    } catch (e) {
      throw new ParleyError('device_error', `cannot open that microphone: ${(e as Error).message}`);
    }
  }

  /** Starts the ringtone (incoming, ringing output) or ringback (outgoing, call output) for a call. */
  private startTone(callId: string, kind: 'ringtone' | 'ringback'): void {
    if (this.tone?.callId === callId) return;
    void this.stopTone();
    const s = this.settingsStore.get();
    const device = this.outputName(kind === 'ringtone' ? s.ringDevice : s.outputDevice);
    const gain = (kind === 'ringtone' ? s.ringVolume : s.outputVolume) * 0.45;
    const playing = this.toneSamples(kind, gain)
      .then((pcm) => playPcm(pcm, { device, loop: true }))
      .catch((e: unknown) => {
      this.emit('notice', { level: 'warning', message: `cannot play the ${kind}: ${(e as Error).message}` });
      return undefined;
    });
    this.tone = { callId, playing };
  }

  /**
   * The ringtone or ringback at `gain` (0–1 of full scale): the WAV from
   * `options.sounds` (resources/sounds, 48 kHz mono s16, rendered by
   * scripts/make-sounds.ts), else the same cadence rendered here.
   */
  private async toneSamples(kind: 'ringtone' | 'ringback', gain: number): Promise<Int16Array> {
    const path = this.options.sounds?.[kind];
    if (path) {
      try {
        const wav = await readWavFile(path);
        let peak = 1;
        for (const v of wav) peak = Math.max(peak, Math.abs(v));
        const k = (gain * 32767) / peak;
        return wav.map((v) => Math.round(v * k));
      } catch (e) {
        this.emit('notice', { level: 'warning', message: `the ${kind} file cannot be read (${(e as Error).message}); using the built-in one` });
      }
    }
    return renderCadence(kind === 'ringtone' ? RINGTONE : RINGBACK, gain);
  }

  /** Stops the ringtone/ringback and waits until its device is released. */
  private async stopTone(): Promise<void> {
    const t = this.tone;
    this.tone = undefined;
    const playing = await t?.playing;
    await playing?.stop();
  }

  /** Whether an incoming call rings here (false under do-not-disturb or for a silenced contact). */
  private shouldRing(peer: string): boolean {
    const s = this.settingsStore.get();
    return !s.doNotDisturb && !s.silenced.includes(peer);
  }

  // ---- lifecycle ---------------------------------------------------------------

  /** Hangs up every call and goes offline (quit). */
  async shutdown(): Promise<void> {
    await this.testMic(false).catch(() => {});
    await this.stopTone();
    await this.goOffline();
  }

  /** The media thread for 1:1 calls, or undefined when they run on this thread. */
  private worker(): MediaWorkerHost | undefined {
    if (this.mediaWorker === undefined) {
      const use = (this.options.mediaThread ?? 'worker') === 'worker' && mediaWorkerAvailable();
      this.mediaWorker = use ? new MediaWorkerHost(this.options.audio, this.options.opus ?? DEFAULT_OPUS) : null;
      if (this.mediaWorker) {
        // Tones and the microphone test release their devices before a call opens its own.
        this.mediaWorker.prepareDevices = async () => {
          await this.stopTone();
          await this.testMic(false);
        };
      }
    }
    return this.mediaWorker ?? undefined;
  }

  private async goOnline(): Promise<void> {
    const s = this.session;
    if (!s) return;
    const signaling = new SignalingClient({ serverUrl: s.serverUrl, deviceId: s.deviceId, token: s.token });
    const settings = this.settingsStore.get();
    const worker = this.worker();
    const platform = mediaPlatform(this.options.audio, this.options.opus ?? DEFAULT_OPUS, worker);
    const e2ee = await startEndToEnd({
      secrets: this.options.secrets,
      dataDir: this.options.dataDir,
      session: s,
      signaling,
      onCorrupt: (why) => this.emit('notice', { level: 'warning', message: why }),
    });
    e2ee.on('keyChange', (c) => this.emit('trust', { username: c.username, kind: c.kind, blocked: c.blocked }));
    e2ee.on('keyChange', (c) =>
      this.emit('notice', {
        level: c.blocked ? 'error' : 'info',
        message: `${c.username} ${c.kind === 'changed' ? 'has new security keys' : c.kind === 'account_key_changed' ? 'has a new account key (reset with their password, or a lying server)' : 'signed in on a new device'}${c.blocked ? ': compare your safety number before calling again' : '.'}`,
      }),
    );
    // A contact's device the server lists without their account key's signature, and alarms about my own devices.
    e2ee.on('deviceRefused', (r) => this.emit('notice', { level: 'error', message: `Security: ${r.message}` }));
    e2ee.on('alarm', (a) => this.emit('notice', { level: 'error', message: `Security alarm: ${a.message}` }));
    e2ee.on('linked', (d) => this.emit('notice', { level: 'info', message: `Device ${d.deviceId} is now linked to your account.` }));
    // Tones and the microphone test release their devices before a call or a group call opens
    // its own (PortAudio opens and closes must not overlap).
    const audioPlatform = {
      openAudio: async (frameMs: 10 | 20) => {
        await this.stopTone();
        await this.testMic(false);
        return platform.openAudio(frameMs);
      },
      createCodec: (frameMs: 10 | 20) => platform.createCodec(frameMs),
      // 1:1 calls' media on the media thread when it is on (group calls stay on this one for now).
      ...(platform.backend ? { backend: platform.backend } : {}),
    };
    const media = { ...DEFAULT_MEDIA, ...this.options.media };
    const engine = new CallEngine(signaling, audioPlatform, media, e2ee);
    // Group calls: the same composition as the headless daemon's (one call at a time, mute and
    // push-to-talk followed, end-to-end encrypted with this device's identity).
    const rooms = roomClientBeside(engine, {
      signaling,
      platform: audioPlatform,
      config: {
        frameMs: media.frameMs,
        ...(media.jitterTargetMs !== undefined ? { jitterTargetMs: media.jitterTargetMs } : {}),
        dtx: media.dtx,
        loopbackOnly: media.loopbackOnly,
      },
      self: { username: s.username, deviceId: s.deviceId },
      endToEnd: { identity: e2ee.identity, directory: e2ee },
    });
    const groups = new GroupCalls(rooms, { username: s.username }, (inviter) => this.shouldRing(inviter));
    groups.on('room', (r) => this.emit('room', r));
    groups.on('levels', (l) => this.emit('roomLevels', l));
    groups.on('invites', (invites) => this.onRoomInvites(invites));
    groups.on('history', (h) => void this.historyStore.add(h).then(() => this.emit('history', { entries: this.historyStore.list() })));
    engine.autoAnswer = !!this.options.autoAnswer;
    // The media thread (or this one) asks for the priority audio clients get (main/media/priority.ts).
    void (worker ? worker.raisePriority() : raiseMediaPriority()).then((r) => {
      this.mediaPriority = r;
    });
    // The first call connects as fast as the next ones (no compilation on its path).
    void engine.warmUp().then((r) => {
      if ('error' in r) this.emit('notice', { level: 'info', message: `Media warm-up failed (${r.error}); the first call may take a moment longer to connect.` });
      // Group calls run on this thread: their codec module loads now, not at the first join.
      rooms.warmUp();
    });
    engine.setMicOpen(this.mic.state().open);
    engine.setOutputGain(settings.outputVolume);
    engine.on('call', (c) => this.onCall(c));
    engine.on('stats', (st) => this.emit('stats', st));
    engine.on('levels', (l) => this.emit('levels', { inputDbfs: l.inputDbfs, outputDbfs: l.outputDbfs }));
    const book = new ContactBook(signaling);
    book.on('changed', (b) => this.onBook(b));
    book.on('request', (r) => this.emit('notice', { level: 'info', message: `${r.username} wants to be your contact.` }));
    book.on('approvalRequest', (r) => this.emit('notice', { level: 'info', message: `${r.username} is calling you for the first time and waits for your approval.` }));
    book.on('approval', (r) => this.emit('notice', { level: 'info', message: `${r.username} ${r.result === 'approved' ? 'approved your call: call again now' : r.result === 'refused' ? 'did not accept your call' : 'did not answer your request to call'}.` }));
    const sessions = new DeviceSessions(signaling);
    sessions.on('token', ({ token }) => {
      // The renewed token replaces the old one in the keychain (the old one no longer works).
      if (this.session) {
        this.session.token = token;
        void this.options.secrets.set(tokenKey(this.session), token).catch((e: unknown) =>
          this.emit('notice', { level: 'error', message: `cannot keep the renewed sign-in in the keychain: ${(e as Error).message}` }),
        );
      }
    });
    sessions.on('ended', (why) => {
      const words = { revoked: 'this device was signed out from another device', logged_out: 'you signed out', expired: 'the sign-in expired' }[why];
      this.emit('notice', { level: 'warning', message: `Signed out: ${words}. Sign in again to make calls.` });
      void this.signOut();
    });
    sessions.startAutoRefresh();
    signaling.on('state', (state, detail) => {
      this.connection = state;
      this.connectionDetail = state === 'online' ? undefined : detail;
      this.publishSession();
      if (state === 'online' && this.settingsStore.get().doNotDisturb) void book.setPresence('dnd').catch(() => {});
    });
    this.signaling = signaling;
    this.engine = engine;
    this.rooms = rooms;
    this.groups = groups;
    this.book = book;
    this.deviceSessions = sessions;
    this.e2ee = e2ee;
    e2ee.startDeviceReview();
    this.publishSession();
    // Online usually takes milliseconds; a server that is down must not hold up
    // the app — the client keeps reconnecting and `session` events tell the UI.
    const online = signaling.connect().catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([online, new Promise<void>((r) => (timer = setTimeout(r, 5000)))]);
    clearTimeout(timer);
  }

  private async goOffline(): Promise<void> {
    const engine = this.engine;
    const signaling = this.signaling;
    const rooms = this.rooms;
    this.engine = undefined;
    this.signaling = undefined;
    this.rooms = undefined;
    this.groups?.close();
    this.groups = undefined;
    this.deviceSessions?.stopAutoRefresh();
    this.deviceSessions = undefined;
    this.book = undefined;
    this.e2ee?.stopDeviceReview();
    this.e2ee = undefined;
    await Promise.allSettled([engine?.shutdown(), rooms?.shutdown()]);
    signaling?.close();
    this.connection = 'offline';
    this.connectionDetail = undefined;
  }

  private onCall(c: CallStatus): void {
    if (c.state === 'incoming' && !this.shouldRing(c.peer)) this.silencedCalls.add(c.callId);
    if (c.state === 'incoming' && !this.silencedCalls.has(c.callId)) this.startTone(c.callId, 'ringtone');
    else if (c.state === 'ringing' && c.direction === 'outgoing') this.startTone(c.callId, 'ringback');
    else if (this.tone?.callId === c.callId) void this.stopTone();
    this.emit('call', this.decorate(c));
    if (c.state === 'ended') {
      this.silencedCalls.delete(c.callId);
      void this.historyStore.add(historyEntryOf(c)).then(() => this.emit('history', { entries: this.historyStore.list() }));
    }
  }

  private decorate(c: CallStatus): CallStatus & { silenced?: boolean } {
    return this.silencedCalls.has(c.callId) ? { ...c, silenced: true } : c;
  }

  private onMic(s: MicState): void {
    this.engine?.setMicOpen(s.open);
    this.emit('mic', s);
  }

  private publishSession(): void {
    this.emit('session', this.sessionInfo());
  }

  private requireEngine(): CallEngine {
    if (!this.engine) throw new ParleyError('unauthenticated', 'sign in first');
    return this.engine;
  }
}

/** The router's device list as the UI shows it: id = the stable PulseAudio name, label = its description. */
function devicesOf(list: DeviceList): { inputs: AudioDevice[]; outputs: AudioDevice[] } {
  const as = (d: { name: string; description: string }) => ({ id: d.name, label: d.description || d.name });
  return { inputs: list.inputs.map(as), outputs: list.outputs.map(as) };
}
