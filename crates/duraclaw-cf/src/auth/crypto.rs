//! WebCrypto on Workers: random bytes from `crypto.getRandomValues` and
//! PBKDF2-HMAC-SHA256 through `crypto.subtle.deriveBits`, which runs in
//! the runtime's native code (hashing in wasm would take many times the
//! CPU time).

use js_sys::{Array, ArrayBuffer, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Crypto, CryptoKey, Pbkdf2Params};
use worker::wasm_bindgen_futures::JsFuture;

use super::password::{HASH_BYTES, PBKDF2_ITERATIONS, PasswordHash, SALT_BYTES};

/// A readable message of a thrown JavaScript value.
pub(super) fn js_message(value: &JsValue) -> String {
    if let Some(e) = value.dyn_ref::<js_sys::Error>() {
        return format!("{}: {}", String::from(e.name()), String::from(e.message()));
    }
    value
        .as_string()
        .unwrap_or_else(|| "an unknown JavaScript error".to_owned())
}

fn crypto() -> Result<Crypto, String> {
    let value = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("crypto"))
        .map_err(|e| format!("WebCrypto is unavailable: {}", js_message(&e)))?;
    if value.is_undefined() || value.is_null() {
        return Err("WebCrypto is unavailable: no global `crypto`".to_owned());
    }
    Ok(value.unchecked_into::<Crypto>())
}

/// `N` bytes from the runtime's cryptographic random generator.
pub(super) fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let len = u32::try_from(N).map_err(|_| "too many random bytes asked for".to_owned())?;
    let array = Uint8Array::new_with_length(len);
    crypto()?
        .get_random_values_with_js_u8_array(&array)
        .map_err(|e| format!("crypto.getRandomValues failed: {}", js_message(&e)))?;
    let mut out = [0u8; N];
    array.copy_to(&mut out);
    Ok(out)
}

/// PBKDF2-HMAC-SHA256 of `password` with `salt` and `iterations`: 32
/// bytes, through WebCrypto. The Workers runtime refuses more than
/// [`PBKDF2_ITERATIONS`] iterations.
pub async fn pbkdf2_sha256(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<Vec<u8>, String> {
    let failed = |what: &str, e: JsValue| format!("PBKDF2 {what} failed: {}", js_message(&e));
    let subtle = crypto()?.subtle();
    let usages = Array::of1(&JsValue::from_str("deriveBits"));
    let key = subtle
        .import_key_with_str("raw", &Uint8Array::from(password), "PBKDF2", false, &usages)
        .map_err(|e| failed("importKey", e))?;
    let key: CryptoKey = JsFuture::from(key)
        .await
        .map_err(|e| failed("importKey", e))?
        .unchecked_into();
    let params =
        Pbkdf2Params::new_with_str("PBKDF2", "SHA-256", iterations, &Uint8Array::from(salt));
    let bits = subtle
        .derive_bits_with_object(&params, &key, (HASH_BYTES * 8) as u32)
        .map_err(|e| failed("deriveBits", e))?;
    let bits = JsFuture::from(bits)
        .await
        .map_err(|e| failed("deriveBits", e))?;
    let buffer: ArrayBuffer = bits
        .dyn_into()
        .map_err(|_| "PBKDF2 deriveBits answered no ArrayBuffer".to_owned())?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// A new stored hash of `password`: a random salt, [`PBKDF2_ITERATIONS`].
pub(super) async fn hash_password(password: &str) -> Result<String, String> {
    let salt: [u8; SALT_BYTES] = random_bytes()?;
    let hash = pbkdf2_sha256(password.as_bytes(), &salt, PBKDF2_ITERATIONS).await?;
    Ok(PasswordHash {
        iterations: PBKDF2_ITERATIONS,
        salt: salt.to_vec(),
        hash,
    }
    .encode())
}

/// Whether `password` matches `stored`. With no stored hash (no such user)
/// or an unreadable one, a hash of the same cost is still computed and the
/// answer is `false`, so a missing user takes as long as a wrong password.
pub(super) async fn verify_password(password: &str, stored: Option<&str>) -> Result<bool, String> {
    match stored.and_then(PasswordHash::decode) {
        Some(hash) => {
            let derived = pbkdf2_sha256(password.as_bytes(), &hash.salt, hash.iterations).await?;
            Ok(hash.matches(&derived))
        }
        None => {
            if stored.is_some() {
                tracing::error!("a stored password hash cannot be read; the login is refused");
            }
            let salt = [0u8; SALT_BYTES];
            let derived = pbkdf2_sha256(password.as_bytes(), &salt, PBKDF2_ITERATIONS).await?;
            // Compared like a real hash, and always refused.
            let dummy = PasswordHash {
                iterations: PBKDF2_ITERATIONS,
                salt: salt.to_vec(),
                hash: vec![0; HASH_BYTES],
            };
            let _ = dummy.matches(&derived);
            Ok(false)
        }
    }
}
