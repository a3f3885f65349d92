//! The dashboard, compiled into the binary so that it works from any
//! directory.

/// The embedded file for a request path, with its content type.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    let file = match path {
        "/" | "/index.html" => "index.html",
        p => p.strip_prefix('/')?,
    };
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|&(_, content_type, body)| (content_type, body))
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Everything the page loads; `tickwire.js` is also the client module other
/// pages import.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", HTML, include_bytes!("../../web/index.html")),
    ("style.css", CSS, include_bytes!("../../web/style.css")),
    ("app.js", JS, include_bytes!("../../web/app.js")),
    ("grid.js", JS, include_bytes!("../../web/grid.js")),
    ("tickwire.js", JS, include_bytes!("../../web/tickwire.js")),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_by_path() {
        assert_eq!(asset("/").map(|a| a.0), Some(HTML));
        assert_eq!(asset("/tickwire.js").map(|a| a.0), Some(JS));
        assert_eq!(asset("/style.css").map(|a| a.0), Some(CSS));
        assert_eq!(asset("/nope.js"), None);
        assert_eq!(asset("/../Cargo.toml"), None);
    }
}
