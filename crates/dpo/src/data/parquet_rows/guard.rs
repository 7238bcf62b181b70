//! Running the `parquet` crate's decoders so that a panic is an error.
//!
//! The crate trusts some of what a page holds: a corrupt page (a length or a
//! bit width overwritten) can make a decoder index past its buffer and
//! panic. [`guarded`] catches such a panic and returns its message, so a
//! hostile file is refused with one error line like any other corrupt file;
//! while it runs, the panic hook stays silent on this thread (the message is
//! in the error instead of on stderr). Panics anywhere else, and on other
//! threads, go to the hook as before.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Whether this thread is inside [`guarded`].
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// The message of the panic [`guarded`] caught on this thread.
    static CAUGHT: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Installs, once, a panic hook that keeps the panics of [`guarded`]
/// calls (their message) and hands every other panic to the hook before it.
fn install_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic with no message".to_string());
                CAUGHT.with(|caught| *caught.borrow_mut() = message);
            } else {
                previous(info);
            }
        }));
    });
}

/// `run()`, or the message of the panic it ended in. Whatever `run` left
/// half-done is dropped with the file: nothing it touched is read again.
pub(super) fn guarded<T>(run: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    let was_guarded = GUARDED.with(|g| g.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(run));
    GUARDED.with(|g| g.set(was_guarded));
    result.map_err(|_| {
        let message = CAUGHT.with(|caught| std::mem::take(&mut *caught.borrow_mut()));
        format!("the parquet decoder failed on corrupt data ({message})")
    })
}
