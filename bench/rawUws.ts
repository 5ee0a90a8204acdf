/**
 * The reference for `bench api`'s cached GET: a bare uWebSockets.js app answering every GET with
 * the same bytes the api sends for it (no auth, no routing, no cache lookup). It runs in the
 * api's process, loaded by the same client in the same run, so the api's figure is read as a
 * ratio to what uWS itself does on this machine right now.
 */
import type { us_listen_socket } from 'uWebSockets.js';
import { loadUws } from '../api/uws.js';

export interface RawUwsServer {
  url: string;
  close(): void;
}

export async function startRawUws(body: Uint8Array, contentType: string): Promise<RawUwsServer> {
  const uws = loadUws();
  const app = uws.App();
  app.get('/*', (res) => {
    res.cork(() => {
      res.writeHeader('content-type', contentType).end(body);
    });
  });
  const socket = await new Promise<us_listen_socket>((resolve, reject) => {
    app.listen('127.0.0.1', 0, (s) => (s === false ? reject(new Error('raw uWS: cannot listen')) : resolve(s)));
  });
  const port = uws.us_socket_local_port(socket);
  return { url: `http://127.0.0.1:${port}`, close: () => uws.us_listen_socket_close(socket) };
}
