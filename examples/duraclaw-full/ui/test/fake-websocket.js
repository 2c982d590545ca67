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

