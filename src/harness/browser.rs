//! Headless Chromium as a real client, for the stages that load a page in a
//! browser (lessons 02 and 06).

/// How to install Chromium, for a stage that needs it.
pub const CHROMIUM_INSTALL: &str = "sudo apt-get install chromium";

/// The words that start Chromium without a screen, on a machine with no
/// outside network, with its own fresh profile in `profile`; the stage adds
/// what to open. Without the background-networking flags it would try
/// Google's services at every start, and log a refusal for each.
pub fn headless_chromium(profile: &std::path::Path) -> Vec<String> {
    [
        "--headless",
        // Root (CI) cannot use Chromium's sandbox; the page is our own.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        // Errors only when fatal: a machine without a desktop session makes
        // it log many harmless ones.
        "--log-level=3",
    ]
    .iter()
    .map(|word| word.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}
