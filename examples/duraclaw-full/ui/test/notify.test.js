import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  base64UrlToBytes,
  cleanDevice,
  deliveryFailed,
  deliveryText,
  guessDevice,
  normalizeSettings,
  pushSupport,
  questionParam,
  subscriptionBody,
} from '../src/notify.js';

test('the VAPID key decodes from base64url, padding or not', () => {
  assert.deepEqual([...base64UrlToBytes('BAEC_-8')], [4, 1, 2, 255, 239]);
  assert.deepEqual([...base64UrlToBytes('AQID')], [1, 2, 3]);
  assert.equal(base64UrlToBytes('B' + 'A'.repeat(86)).length, 65);
  assert.throws(() => base64UrlToBytes('not a key!'), /base64url/);
});

test('the subscription body carries endpoint, keys and a clean device name', () => {
  const json = { endpoint: 'https://push.example/abc', expirationTime: null, keys: { p256dh: 'P', auth: 'A' } };
  assert.deepEqual(subscriptionBody(json, '  Pixel 8 \u0007'), {
    endpoint: 'https://push.example/abc',
    keys: { p256dh: 'P', auth: 'A' },
    device: 'Pixel 8',
  });
  assert.throws(() => subscriptionBody({ endpoint: 'x', keys: {} }, 'd'), /keys/);
  assert.throws(() => subscriptionBody(null, 'd'), /endpoint/);
  assert.equal(cleanDevice(''), 'This device');
  assert.equal(cleanDevice('x'.repeat(100)).length, 64);
});

test('a device name is guessed from the user agent', () => {
  assert.equal(guessDevice('Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Mobile Safari/537.36'), 'Chrome on Android');
  assert.equal(guessDevice('Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0'), 'Firefox on Linux');
  assert.equal(guessDevice('Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1'), 'Safari on iOS');
  assert.equal(guessDevice('Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36 Edg/131.0'), 'Edge on Windows');
  assert.equal(guessDevice(''), 'Browser');
});

test('a route names the question to show', () => {
  assert.equal(questionParam('#/s/01ABC?q=q_1-2'), 'q_1-2');
  assert.equal(questionParam('/s/01ABC?x=1&q=a%20b'), 'a b');
  assert.equal(questionParam('#/s/01ABC'), null);
  assert.equal(questionParam('#/s/01ABC?q='), null);
  assert.equal(questionParam('#/s/01ABC?q=%E0%A4%A'), null);
});

test('a delivery says what happened and why', () => {
  assert.equal(deliveryText({ status: 'accepted', http_status: 201, attempts: 1 }), 'accepted by the push service');
  assert.equal(deliveryText({ status: 'failed', http_status: 500, error: 'server error', attempts: 4 }), 'failed: HTTP 500, server error (4 attempts)');
  assert.equal(deliveryText({ status: 'removed', http_status: 410, attempts: 1 }), 'subscription removed: HTTP 410');
  assert.equal(deliveryText({ status: 'retrying', http_status: 429, attempts: 2 }), 'retrying: HTTP 429 (2 attempts)');
  assert.equal(deliveryFailed({ status: 'failed' }), true);
  assert.equal(deliveryFailed({ status: 'accepted' }), false);
});

test('settings get their defaults', () => {
  assert.deepEqual(normalizeSettings(null), { on_question: true, on_turn_finished: false, on_error: true, preview: 'tool' });
  assert.deepEqual(normalizeSettings({ on_question: false, on_turn_finished: true, preview: 'short' }), {
    on_question: false,
    on_turn_finished: true,
    on_error: true,
    preview: 'short',
  });
  assert.equal(normalizeSettings({ preview: '<script>' }).preview, 'tool');
});

test('what this browser can do', () => {
  assert.equal(pushSupport({ isSecureContext: false }), 'insecure');
  assert.equal(pushSupport({ isSecureContext: true, navigator: {} }), 'unsupported');
  const ok = { isSecureContext: true, navigator: { serviceWorker: {} }, PushManager: function () {}, Notification: { permission: 'granted' } };
  assert.equal(pushSupport(ok), 'granted');
  assert.equal(pushSupport({ ...ok, Notification: { permission: 'denied' } }), 'denied');
});
