import { deflateRawSync } from 'node:zlib';

// The few browser globals SessionSocket uses, and a WebSocket a test
// drives (not a test file itself: imported by the socket tests).

export const sockets = [];
class FakeWebSocket {
  static OPEN = 1;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    sockets.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
  }
  // What the server does:
  open() {
    this.readyState = 1;
    this.onopen && this.onopen();
  }
  frame(obj) {
    this.onmessage({ data: JSON.stringify(obj) });
  }
  // A binary frame: raw DEFLATE of `objs` as text frames joined by "\n".
  binary(objs) {
    const z = deflateRawSync(Buffer.from(objs.map((o) => JSON.stringify(o)).join('\n')));
    this.onmessage({ data: z.buffer.slice(z.byteOffset, z.byteOffset + z.byteLength) });
  }
  bytes(u8) {
    this.onmessage({ data: u8.buffer.slice(u8.byteOffset, u8.byteOffset + u8.byteLength) });
  }
  drop(code, reason = '') {
    this.readyState = 3;
    this.onclose({ code, reason });
  }
}
globalThis.WebSocket = FakeWebSocket;
globalThis.window = { addEventListener() {}, removeEventListener() {} };
globalThis.document = { addEventListener() {}, removeEventListener() {}, visibilityState: 'visible' };
globalThis.location = { protocol: 'http:', host: '127.0.0.1:1' };
Object.defineProperty(globalThis, 'navigator', { value: { onLine: true }, configurable: true });

