import { z } from 'zod';
import { CallId, EndReason, Username } from '../call';
import { AccountDevicesStatus, CallStatsNotification, CallStatus, RoomMember, RoomStatus, SafetyNumberResult, TrustInfo } from '../protocol/control';

/**
 * The typed IPC contract between the renderer and the main process
 * (DESIGN.md "Data flow"): every request (renderer → main, answered) and every
 * event (main → renderer) is declared here once, with a zod schema.
 *
 * - In Electron, `main/app/ipc.ts` registers one `ipcMain.handle` per request,
 *   checks the sender is our own page and parses the params with the schema
 *   below; `preload/index.ts` exposes one typed function per request and a
 *   `subscribe` limited to the event names below.
 * - In development and in the UI tests, `main/app/dev-bridge.ts` carries the
 *   same contract over a loopback WebSocket (JSON-RPC 2.0) to the same
 *   handlers.
 *
 * The renderer imports only the types of this module.
 */

/** A call as the UI sees it: the core's CallStatus plus whether it rings here. */
export const UiCall = CallStatus.extend({
  /** An incoming call that does not ring (do-not-disturb, or a contact set to "don't ring"). */
  silenced: z.boolean().optional(),
});
export type UiCall = z.infer<typeof UiCall>;

/** Where a signed-in user's server connection stands. */
export const Connection = z.enum(['offline', 'connecting', 'online']);
export type Connection = z.infer<typeof Connection>;

/** What the app knows about the user on this device. */
export const SessionInfo = z.object({
  signedIn: z.boolean(),
  username: Username.optional(),
  serverUrl: z.string().optional(),
  connection: Connection,
  /** Why the connection is offline, in words for the user. */
  detail: z.string().optional(),
});
export type SessionInfo = z.infer<typeof SessionInfo>;

/** Presence as contacts see it. `offline` also covers "unknown" (not a contact, or blocked). */
export const Presence = z.enum(['online', 'away', 'in_call', 'dnd', 'offline']);
export type Presence = z.infer<typeof Presence>;

/** One entry of the contact list. */
export const Contact = z.object({
  username: Username,
  /**
   * `accepted`: a contact; `incoming`: they asked to be our contact;
   * `outgoing`: we asked, they have not answered; `blocked`: we blocked them.
   */
  relation: z.enum(['accepted', 'incoming', 'outgoing', 'blocked']),
  presence: Presence,
  /** Per-contact "don't ring": their calls are logged as missed but never ring. */
  silenced: z.boolean(),
});
export type Contact = z.infer<typeof Contact>;

/** One participant of the group call as the UI shows it. */
export const UiRoomMember = RoomMember.extend({
  /**
   * What this client lost of that participant's audio over the last second,
   * % of the packets expected (absent for itself and before its audio arrives):
   * the per-participant connection quality.
   */
  lossPercent: z.number().optional(),
});
export type UiRoomMember = z.infer<typeof UiRoomMember>;

/**
 * The group call this device is in, or was in last (main/core/room-client.ts's
 * RoomStatus, every participant with its recent loss), plus how it started:
 * `outgoing` (we started it or joined it by id) or `incoming` (we were rung
 * into it by `inviter`). `invited`: who we rang who has not joined (yet).
 */
export const UiRoom = RoomStatus.extend({
  participants: z.array(UiRoomMember),
  direction: z.enum(['outgoing', 'incoming']),
  inviter: Username.optional(),
  invited: z.array(Username),
  /**
   * Who we rang whose ring ended unanswered in the last few seconds
   * (INVITE_END_SHOWN_MS, main/core/group-calls.ts), and how: `declined`,
   * `no_answer` (the ring timed out) or `cancelled` (the ring stopped
   * because everyone left). Not in `invited`.
   */
  inviteEnded: z.array(z.object({ username: Username, outcome: z.enum(['declined', 'no_answer', 'cancelled']) })).optional(),
});
export type UiRoom = z.infer<typeof UiRoom>;

/** A group call ringing on this device (the server's `room.ring`): who invites, who is already in, until when (Unix ms). */
export const RoomInvite = z.object({
  roomId: z.uuid(),
  inviter: Username,
  participants: z.array(Username),
  expiresAt: z.number(),
  /** Not ringing here (do-not-disturb, or the inviter is a contact set to "don't ring"). */
  silenced: z.boolean().optional(),
});
export type RoomInvite = z.infer<typeof RoomInvite>;

/** Who is audible in the group call now (the SFU's audio-level observer, every ~300 ms; empty: everyone silent). `volume` dBov. */
export const RoomLevels = z.object({
  roomId: z.uuid(),
  levels: z.array(z.object({ username: Username, deviceId: z.string(), volume: z.number() })),
});
export type RoomLevels = z.infer<typeof RoomLevels>;

/** Most people a group call starts with from contacts (the server's default room size is 16, us included). */
export const MAX_GROUP_INVITE = 15;

/** One call in the call history (newest first in `history.list`). */
export const HistoryEntry = z.object({
  /** The call id; a group call's room id. */
  callId: CallId,
  /** The other side; in a group call, who rang us (incoming) or ourselves (one we started). */
  peer: Username,
  direction: z.enum(['outgoing', 'incoming']),
  /** `missed`: an incoming call never answered here (including ones silenced by do-not-disturb). */
  outcome: z.enum(['answered', 'missed', 'declined', 'unanswered', 'failed']),
  endReason: EndReason.optional(),
  /** Unix ms when the call was created / ended. */
  startedAt: z.number(),
  endedAt: z.number(),
  /** Talk time in seconds (0 when never connected). */
  durationS: z.number(),
  /** A group call: everyone else who was in it while we were (or, missed: who was in it when it rang), and who we rang. */
  group: z.object({ participants: z.array(Username), invited: z.array(Username) }).optional(),
});
export type HistoryEntry = z.infer<typeof HistoryEntry>;

/** An audio device as the settings show it. `id` is stable across restarts (the PulseAudio/OS name). */
export const AudioDevice = z.object({ id: z.string(), label: z.string() });
export type AudioDevice = z.infer<typeof AudioDevice>;

/** Push-to-talk key: a key code as `KeyboardEvent.code` names it (e.g. "Space", "F8", "ControlRight"). */
export const PttKey = z.string().min(1).max(32).regex(/^[A-Za-z0-9]+$/, 'a key code such as "F8" or "Space"');

/** User settings, persisted in the data folder (never secrets). */
export const Settings = z.object({
  /** Device ids; `null` means "system default" (follows the OS default). */
  inputDevice: z.string().nullable(),
  outputDevice: z.string().nullable(),
  ringDevice: z.string().nullable(),
  pushToTalk: z.object({ enabled: z.boolean(), key: PttKey }),
  /** Ringtone volume, 0–1. */
  ringVolume: z.number().min(0).max(1),
  /** Call output volume, 0–1 (1 = unchanged). */
  outputVolume: z.number().min(0).max(1),
  startAtLogin: z.boolean(),
  doNotDisturb: z.boolean(),
  /** Contacts whose calls do not ring here (per-contact "don't ring"); still logged as missed. */
  silenced: z.array(Username).max(1000),
  /**
   * Open Parley's audio streams with the PulseAudio / PipeWire media role
   * `phone`, so that the sound server ducks or pauses other streams
   * (module-role-cork, module-role-ducking, WirePlumber's policy). Takes effect
   * for streams opened after the change.
   */
  phoneRole: z.boolean(),
  /** Pause the desktop's media players (MPRIS) while a call is connected; resume those we paused after. */
  pauseMedia: z.boolean(),
});
export type Settings = z.infer<typeof Settings>;

export const DEFAULT_SETTINGS: Settings = {
  inputDevice: null,
  outputDevice: null,
  ringDevice: null,
  pushToTalk: { enabled: false, key: 'F8' },
  ringVolume: 0.8,
  outputVolume: 1,
  startAtLogin: false,
  doNotDisturb: false,
  silenced: [],
  phoneRole: true,
  pauseMedia: true,
};

/** The microphone as the call controls show it. */
export const MicState = z.object({
  /** The user's mute button. */
  muted: z.boolean(),
  pushToTalk: z.boolean(),
  /** With push-to-talk on: the key is held. */
  talking: z.boolean(),
  /** Whether audio from the microphone reaches the peer now. */
  open: z.boolean(),
  /** Which mechanism sees the push-to-talk key (shown in settings). */
  pttMechanism: z.enum(['global-hook', 'portal', 'window']),
});
export type MicState = z.infer<typeof MicState>;

/** Input/output levels for the meters, dBFS (−100 = silence), sent at up to 20 Hz while in a call or a mic test. */
export const Levels = z.object({ inputDbfs: z.number(), outputDbfs: z.number() });
export type Levels = z.infer<typeof Levels>;

const Empty = z.object({}).strict().default({});
const Ok = z.object({ ok: z.literal(true) });
const Password = z.string().min(1, 'enter a password').max(1024);
const ServerUrl = z.url({ protocol: /^https?$/, error: 'a server address such as https://parley.example.org' });
const WithCall = z.object({ callId: CallId.optional() }).strict().default({});

/** Requests: renderer → main, each with a reply. */
export const IpcRequests = {
  'session.get': { params: Empty, result: SessionInfo },
  /** Creates an account, then signs in. Throws `already_exists`, `invalid_params`, `unavailable`. */
  'session.register': {
    params: z.object({ serverUrl: ServerUrl, username: Username, password: Password }).strict(),
    result: SessionInfo,
  },
  /** Throws `bad_credentials`, `unavailable`, `keychain_unavailable`. */
  'session.signIn': {
    params: z.object({ serverUrl: ServerUrl, username: Username, password: Password }).strict(),
    result: SessionInfo,
  },
  'session.signOut': { params: Empty, result: SessionInfo },

  'contacts.list': { params: Empty, result: z.object({ contacts: z.array(Contact) }) },
  /** Sends a contact request (or accepts theirs). Throws `not_found` for an unknown user. */
  'contacts.add': { params: z.object({ username: Username }).strict(), result: Ok },
  'contacts.accept': { params: z.object({ username: Username }).strict(), result: Ok },
  'contacts.remove': { params: z.object({ username: Username }).strict(), result: Ok },
  'contacts.block': { params: z.object({ username: Username, blocked: z.boolean() }).strict(), result: Ok },
  'contacts.silence': { params: z.object({ username: Username, silenced: z.boolean() }).strict(), result: Ok },

  /** Calls someone. Throws `invalid_state` when a call is already live, `not_found`, `forbidden`, `busy`… */
  'call.start': { params: z.object({ to: Username }).strict(), result: z.object({ callId: CallId }) },
  'call.answer': { params: WithCall, result: z.object({ callId: CallId }) },
  'call.decline': { params: WithCall, result: z.object({ callId: CallId }) },
  'call.hangup': { params: WithCall, result: z.object({ callId: CallId }) },
  'call.hold': {
    params: z.object({ callId: CallId.optional(), held: z.boolean() }).strict(),
    result: z.object({ callId: CallId }),
  },
  'call.list': { params: Empty, result: z.object({ calls: z.array(UiCall) }) },

  'mic.get': { params: Empty, result: MicState },
  'mic.setMuted': { params: z.object({ muted: z.boolean() }).strict(), result: MicState },
  /** The push-to-talk key pressed/released while Parley's window has focus (the global hook covers the rest). */
  'mic.pushToTalk': { params: z.object({ pressed: z.boolean() }).strict(), result: MicState },

  /**
   * Starts a group call: opens a room on the server's SFU, joins it and rings
   * `invite` (contacts' usernames, every device; none: an empty room to invite into later).
   * Throws `invalid_state` (a call is live), `unavailable` (no SFU on the server), `device_error`,
   * and for the invitations the server's `forbidden`, `unknown_user`, `room_full`, `rate_limited`.
   */
  'room.create': {
    params: z.object({ invite: z.array(Username).max(MAX_GROUP_INVITE, `at most ${MAX_GROUP_INVITE} people at once`).default([]) }).strict().default({ invite: [] }),
    result: UiRoom,
  },
  /** Joins a group call (the ringing one, or by id). Throws `not_found`, `room_full`, `room_ended`, `invalid_state`, `device_error`. */
  'room.join': { params: z.object({ roomId: z.uuid() }).strict(), result: UiRoom },
  /** Declines a ringing group call (this account's other devices stop ringing). Throws `not_found`. */
  'room.decline': { params: z.object({ roomId: z.uuid() }).strict(), result: Ok },
  /** Leaves the group call. Throws `invalid_state` when in none. */
  'room.leave': { params: Empty, result: z.object({ roomId: z.uuid() }) },
  /** Rings more people into the group call we are in. Throws `invalid_state` (in none), `forbidden`, `unknown_user`, `room_full`, `rate_limited`. */
  'room.invite': {
    params: z.object({ usernames: z.array(Username).min(1, 'choose someone to add').max(MAX_GROUP_INVITE) }).strict(),
    result: z.object({ invited: z.array(Username) }),
  },
  /** The group call we are in (or were in last; null: none since start) and the group calls ringing here. */
  'room.get': { params: Empty, result: z.object({ room: UiRoom.nullable(), invites: z.array(RoomInvite) }) },

  'history.list': {
    params: z.object({ limit: z.number().int().min(1).max(500).default(100) }).strict().default({ limit: 100 }),
    result: z.object({ entries: z.array(HistoryEntry) }),
  },
  'history.clear': { params: Empty, result: Ok },

  'settings.get': { params: Empty, result: Settings },
  /** Changes some settings; device changes apply to a live call at once. */
  'settings.set': { params: Settings.partial().strict(), result: Settings },

  /**
   * The safety number with a contact (60 digits in 12 groups of 5, the same on both ends; docs/SECURITY.md)
   * and its digits for the QR code. Throws `key_changed` (accept the change first), `not_found`, `not_contact`.
   */
  'trust.safetyNumber': { params: z.object({ username: Username }).strict(), result: SafetyNumberResult },
  /** What is pinned for a contact (verified, a pending key change). Throws `not_found` before the first call. */
  'trust.get': { params: z.object({ username: Username }).strict(), result: TrustInfo },
  /** Marks the contact verified after comparing safety numbers. Throws `key_changed`, `not_found`. */
  'trust.verify': { params: z.object({ username: Username }).strict(), result: TrustInfo },
  /** Accepts a contact's changed keys (calls work again; the verified mark stays cleared). */
  'trust.acceptKeyChange': { params: z.object({ username: Username }).strict(), result: TrustInfo },
  /**
   * My account's devices as this device sees them (reviews the server's list now): role, account key,
   * approved devices and alarms (docs/SECURITY.md "Account key and device certificates").
   */
  'account.devices': { params: Empty, result: AccountDevicesStatus },
  /** On the device holding the account key: a one-time code for a new device. Throws `forbidden` elsewhere. */
  'account.startLink': { params: Empty, result: z.object({ code: z.string(), expiresAt: z.number() }) },
  /** On a new device: links it with the code shown on the holder. Throws `invalid_params`, `not_found`, `security`, `unavailable`. */
  'account.link': { params: z.object({ code: z.string().min(1).max(64) }).strict(), result: z.object({ accountKey: z.string(), deviceId: z.string() }) },
  /** Recovery: a new account key on this device (contacts are warned and must accept it). `confirm` must be true. */
  'account.resetAccountKey': { params: z.object({ confirm: z.literal(true) }).strict(), result: z.object({ accountKey: z.string() }) },

  'devices.list': {
    params: Empty,
    result: z.object({ inputs: z.array(AudioDevice), outputs: z.array(AudioDevice) }),
  },
  /** Plays a short test tone on the output (or ring) device. */
  'devices.testTone': { params: z.object({ target: z.enum(['output', 'ring']) }).strict().default({ target: 'output' }), result: Ok },
  /** Starts/stops the microphone test: `levels` events flow while it runs. */
  'devices.testMic': { params: z.object({ on: z.boolean() }).strict(), result: Ok },
} as const;

/** Events: main → renderer. */
export const IpcEvents = {
  session: SessionInfo,
  /** A call changed state (every transition, and the end with its reason). */
  call: UiCall,
  /** Once a second per connected call. */
  stats: CallStatsNotification,
  contacts: z.object({ contacts: z.array(Contact) }),
  history: z.object({ entries: z.array(HistoryEntry) }),
  settings: Settings,
  mic: MicState,
  levels: Levels,
  devices: z.object({ inputs: z.array(AudioDevice), outputs: z.array(AudioDevice) }),
  /** A contact's keys changed or a new device appeared (`blocked`: calls wait for the user to accept). */
  trust: z.object({ username: Username, kind: z.enum(['changed', 'added', 'account_key_changed']), blocked: z.boolean() }),
  /** The group call changed (join, leave, participants, speaker, mute), and once a second while in one (quality). */
  room: UiRoom,
  /** Who is audible in the group call now (speaking indicators). */
  roomLevels: RoomLevels,
  /** The group calls ringing on this device changed (a new one rings, one was answered elsewhere, declined, timed out). */
  roomInvites: z.object({ invites: z.array(RoomInvite) }),
  /** Something the user should read (a device fell back, a policy warning…). */
  notice: z.object({ level: z.enum(['info', 'warning', 'error']), message: z.string() }),
} as const;

export type IpcRequestName = keyof typeof IpcRequests;
export type IpcEventName = keyof typeof IpcEvents;
export type IpcParams<M extends IpcRequestName> = z.input<(typeof IpcRequests)[M]['params']>;
export type IpcResult<M extends IpcRequestName> = z.output<(typeof IpcRequests)[M]['result']>;
export type IpcEvent<E extends IpcEventName> = z.output<(typeof IpcEvents)[E]>;

export const IPC_REQUEST_NAMES = Object.keys(IpcRequests) as IpcRequestName[];
export const IPC_EVENT_NAMES = Object.keys(IpcEvents) as IpcEventName[];

/** The one channel name per request in Electron (`ipcMain.handle`). */
export const ipcChannel = (m: IpcRequestName): string => `parley:${m}`;
/** The one channel for events in Electron (`webContents.send(EVENT_CHANNEL, name, payload)`). */
export const IPC_EVENT_CHANNEL = 'parley:event';

/**
 * What the renderer sees as `window.parley` (preload) or gets from the
 * development bridge: one function per request (`request['call.start']({to})`)
 * and `subscribe`, limited to the event names above. A request rejects with an
 * `IpcError`-shaped error: `{ code, reason, message }`.
 */
export type ParleyApi = {
  readonly version: string;
  readonly request: { readonly [M in IpcRequestName]: (params?: IpcParams<M>) => Promise<IpcResult<M>> };
  /** Returns the unsubscribe function. */
  subscribe<E extends IpcEventName>(event: E, listener: (payload: IpcEvent<E>) => void): () => void;
};

/** How an error crosses the IPC boundary (from a ParleyError). */
export const IpcError = z.object({ code: z.number().int(), reason: z.string(), message: z.string() });
export type IpcError = z.infer<typeof IpcError>;

/** Parameter type of the events map, for handlers' emit functions. */
export type IpcEmit = <E extends IpcEventName>(event: E, payload: IpcEvent<E>) => void;

/** Zod type of a request's params (main side). */
export type IpcParamsSchema<M extends IpcRequestName> = (typeof IpcRequests)[M]['params'];

export { CallStatus, CallStatsNotification, SafetyNumberResult, TrustInfo };
export type { EndReason };
