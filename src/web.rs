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

const ASSETS: &[(&str, &str, &[u8])] = &[(
    "index.html",
    "text/html; charset=utf-8",
    include_bytes!("../web/index.html"),
)];
