export * from './envelope';
export * from './signaling';
export * from './rpc';
export * from './control';
