//! Debian's Chromium, headless: the page as the browser built it after its
//! scripts ran (`--dump-dom`), and screenshots. Each call is a fresh
//! browser with an empty profile and no network but loopback.

use std::{path::Path, process::Command, time::Duration};

pub const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium(profile: &Path) -> Command {
    let mut c = Command::new(CHROMIUM);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The DOM of `url` after its scripts ran for `budget` of the page's time
/// (network waits do not count against it).
pub fn dom(url: &str, budget: Duration) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(profile.path())
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("Chromium runs (apt-get install chromium; .ci/run does)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A PNG of `url` as a `width`×`height` window shows it.
pub fn screenshot(url: &str, budget: Duration, to: &Path, (width, height): (u32, u32)) {
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(profile.path())
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", to.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success() && to.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The opening tags in `dom` that contain `marker` (e.g. `class="node source"`).
pub fn tags<'a>(dom: &'a str, marker: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find(marker) {
        let start = rest[..i].rfind('<').unwrap_or(0);
        let end = i + rest[i..].find('>').unwrap_or(rest.len() - i);
        out.push(&rest[start..end]);
        rest = &rest[end..];
    }
    out
}

/// An attribute's value in one opening tag (entities `&amp;` `&quot;` undone).
pub fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let i = tag.find(&key)? + key.len();
    let len = tag[i..].find('"')?;
    Some(
        tag[i..i + len]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// The one tag with `marker` whose attribute `name` is `value`.
pub fn tag_with<'a>(dom: &'a str, marker: &str, name: &str, value: &str) -> Option<&'a str> {
    tags(dom, marker)
        .into_iter()
        .find(|t| attr(t, name).as_deref() == Some(value))
}
