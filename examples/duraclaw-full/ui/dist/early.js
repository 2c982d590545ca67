// Runs before the app's bundle (a plain async script, not bundled; if it
// comes later than the app's first look for it, it does nothing): on a session
// link it opens the session's stream and asks for the login and the
// session's metadata at once, so the server answers while the bundle is
// still being parsed. The app adopts them (connection.js `adoptEarlySocket`,
// api.js `takeEarly`) when it asks for the very same thing, and otherwise
// drops them. Nothing here acts on what comes back.
(function () {
  'use strict';
  // The app already looked for what this would have opened: too late.
  if (window.__duraclawEarly === false) return;
  var m = /^#\/s\/([^/?#]+)/.exec(location.hash);
  if (!m || typeof WebSocket !== 'function' || typeof fetch !== 'function') return;
  var id;
  try {
    id = decodeURIComponent(m[1]);
  } catch (e) {
    return;
  }
  var path = '/api/sessions/' + encodeURIComponent(id);
  var early = { sockets: {}, fetches: {} };
  var init = { method: 'GET', credentials: 'same-origin', headers: { Accept: 'application/json' } };
  [['/api/me'], [path]].forEach(function (p) {
    var res = fetch(p[0], init);
    // A failure is the app's to report when it takes the answer.
    res.catch(function () {});
    early.fetches[p[0]] = res;
  });
  // The first connection's URL: connection.js `streamUrl(id, 0)`.
  var compress = typeof DecompressionStream === 'function' ? '&compress=deflate-raw' : '';
  var url = (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + path + '/ws?tail=200' + compress;
  try {
    var ws = new WebSocket(url);
    // Binary frames (a compressed replay) are kept as they came.
    ws.binaryType = 'arraybuffer';
    var s = { ws: ws, opened: false, events: [] };
    ws.onopen = function () {
      s.opened = true;
    };
    ws.onmessage = function (e) {
      s.events.push(e);
    };
    ws.onclose = function (e) {
      s.closed = e;
    };
    early.sockets[url] = s;
  } catch (e) {
    /* the app opens its own */
  }
  window.__duraclawEarly = early;
})();
