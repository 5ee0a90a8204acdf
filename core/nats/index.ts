/**
 * NATS for towerwatch: the local nats-server (launcher, supervisor, store claim), connections
 * that reconnect one way, retries through broker blips, and the JetStream streams. The public
 * surface of this folder: code outside core/nats imports from here.
 */
export * from './connection.js';
export * from './kv.js';
export * from './retry.js';
export * from './server.js';
export * from './storeLock.js';
export * from './streams.js';
export * from './supervisor.js';
