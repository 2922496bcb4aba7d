/**
 * The renderer's state: one reactive object fed by the contract's events, and
 * the actions the screens call. Every action reports failures in `app.error`
 * (words from the main process, meant for the user) instead of throwing.
 */
import type {
  AudioDevice,
  CallStatsNotification,
  Contact,
  HistoryEntry,
  Levels,
  MicState,
  ParleyApi,
  RoomInvite,
  RoomLevels,
  SessionInfo,
  Settings,
  UiCall,
  UiRoom,
} from '../../../common/ipc/contract';
import { connectApi, request, RequestError } from './api';

export type Tab = 'contacts' | 'history' | 'settings';

class AppState {
  // Not $state: a deep state proxy would wrap the API object (and hide its Proxy-made functions).
  api: ParleyApi | undefined;
  ready = $state(false);
  fatal: string | undefined = $state();
  session: SessionInfo = $state({ signedIn: false, connection: 'offline' });
  calls: UiCall[] = $state([]);
  stats: Record<string, CallStatsNotification> = $state({});
  /** When each call's latest `stats` arrived, Unix ms (its `silentMs` was measured then). */
  statsAt: Record<string, number> = $state({});
  contacts: Contact[] = $state([]);
  history: HistoryEntry[] = $state([]);
  settings: Settings | undefined = $state();
  mic: MicState = $state({ muted: false, pushToTalk: false, talking: false, open: true, pttMechanism: 'window' });
  levels: Levels = $state({ inputDbfs: -100, outputDbfs: -100 });
  devices: { inputs: AudioDevice[]; outputs: AudioDevice[] } = $state({ inputs: [], outputs: [] });
  tab: Tab = $state('contacts');
  error: string | undefined = $state();
  notice: string | undefined = $state();
  busy = $state(false);
  /** The group call we are in, or were in last (the screen keeps showing how it ended for a moment). */
  room: UiRoom | undefined = $state();
  /** Who is audible in the group call now (the SFU's audio levels). */
  roomLevels: RoomLevels | undefined = $state();
  /** Group calls ringing here, oldest first. */
  invites: RoomInvite[] = $state([]);
  /** The contact whose safety number is shown (a dialog over any screen). */
  safetyNumberFor: string | undefined = $state();

  /** The call that is not over (at most one). */
  get liveCall(): UiCall | undefined {
    return this.calls.find((c) => c.state !== 'ended');
  }

  /** The group call we are in (joining or joined). */
  get liveRoom(): UiRoom | undefined {
    return this.room && (this.room.state === 'joining' || this.room.state === 'joined' || this.room.state === 'reconnecting') ? this.room : undefined;
  }

  /** Device ids audible in the group call now. */
  get speaking(): Set<string> {
    const l = this.roomLevels;
    return new Set(l && l.roomId === this.room?.roomId ? l.levels.map((x) => x.deviceId) : []);
  }

  /** The most recent call, live or just ended (the in-call screen keeps showing how it ended for a moment). */
  lastCall: UiCall | undefined = $state();

  async init(): Promise<void> {
    try {
      this.api = await connectApi();
    } catch (e) {
      this.fatal = (e as Error).message;
      return;
    }
    const api = this.api;
    api.subscribe('session', (s) => {
      const wasSignedIn = this.session.signedIn;
      this.session = s;
      if (s.signedIn && !wasSignedIn) void this.refresh();
    });
    api.subscribe('call', (c) => this.onCall(c));
    api.subscribe('stats', (s) => {
      this.stats = { ...this.stats, [s.callId]: s };
      this.statsAt = { ...this.statsAt, [s.callId]: Date.now() };
    });
    api.subscribe('contacts', (c) => (this.contacts = c.contacts));
    api.subscribe('history', (h) => (this.history = h.entries));
    api.subscribe('settings', (s) => (this.settings = s));
    api.subscribe('mic', (m) => (this.mic = m));
    api.subscribe('levels', (l) => (this.levels = l));
    api.subscribe('devices', (d) => (this.devices = d));
    api.subscribe('room', (r) => {
      this.room = r;
      if (r.state === 'left' || r.state === 'ended') this.roomLevels = undefined;
    });
    api.subscribe('roomLevels', (l) => (this.roomLevels = l));
    api.subscribe('roomInvites', (i) => (this.invites = i.invites));
    api.subscribe('trust', (t) => {
      if (t.blocked) this.safetyNumberFor = t.username;
    });
    api.subscribe('notice', (n) => (n.level === 'info' ? this.inform(n.message) : (this.notice = n.message)));
    await this.refresh();
    this.ready = true;
  }

  private onCall(c: UiCall): void {
    const i = this.calls.findIndex((x) => x.callId === c.callId);
    this.calls = i >= 0 ? this.calls.map((x) => (x.callId === c.callId ? c : x)) : [...this.calls, c];
    this.lastCall = c;
  }

  async refresh(): Promise<void> {
    const api = this.api;
    if (!api) return;
    this.session = await request(api, 'session.get');
    this.settings = await request(api, 'settings.get');
    this.mic = await request(api, 'mic.get');
    this.calls = (await request(api, 'call.list')).calls;
    this.lastCall = this.liveCall;
    this.history = (await request(api, 'history.list')).entries;
    const rooms = await request(api, 'room.get');
    this.room = rooms.room && (rooms.room.state === 'joining' || rooms.room.state === 'joined' || rooms.room.state === 'reconnecting') ? rooms.room : undefined;
    this.invites = rooms.invites;
    if (this.session.signedIn) {
      this.contacts = (await request(api, 'contacts.list')).contacts;
    }
  }

  async loadDevices(): Promise<void> {
    await this.run(async (api) => {
      this.devices = await request(api, 'devices.list');
    });
  }

  /** Shows a notice that goes away by itself after 8 s (warnings and errors stay until dismissed). */
  inform(message: string): void {
    this.notice = message;
    setTimeout(() => {
      if (this.notice === message) this.notice = undefined;
    }, 8000);
  }

  /** Runs an action, turning a failure into `error` for the user. Returns false when it failed. */
  async run(action: (api: ParleyApi) => Promise<unknown>): Promise<boolean> {
    const api = this.api;
    if (!api) return false;
    this.error = undefined;
    this.busy = true;
    try {
      await action(api);
      return true;
    } catch (e) {
      this.error = e instanceof RequestError ? e.message : (e as Error).message;
      return false;
    } finally {
      this.busy = false;
    }
  }

  /** Starts a group call ringing `invite`. */
  startGroup(invite: string[]) {
    return this.run(async (api) => {
      this.room = await request(api, 'room.create', { invite });
    });
  }

  call(to: string) {
    return this.run(async (api) => {
      await request(api, 'call.start', { to });
    });
  }
}

export const app = new AppState();
export { request };
