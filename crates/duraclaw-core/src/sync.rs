//! The one place that decides what `Send` means on each target.
//!
//! Durable Objects run single-threaded on wasm32 and their futures are not
//! `Send`; everywhere else the traits require `Send + Sync`. Traits use
//! `#[cfg_attr(target_arch = "wasm32", async_trait(?Send))]` /
//! `#[cfg_attr(not(target_arch = "wasm32"), async_trait)]` together with
//! these marker traits.

/// `Send` outside wasm32, nothing on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub trait SendOutsideWasm: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + ?Sized> SendOutsideWasm for T {}

/// `Send` outside wasm32, nothing on wasm32.
#[cfg(target_arch = "wasm32")]
pub trait SendOutsideWasm {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> SendOutsideWasm for T {}

/// `Sync` outside wasm32, nothing on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub trait SyncOutsideWasm: Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Sync + ?Sized> SyncOutsideWasm for T {}

/// `Sync` outside wasm32, nothing on wasm32.
#[cfg(target_arch = "wasm32")]
pub trait SyncOutsideWasm {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> SyncOutsideWasm for T {}
