//! The parts of a request's absolute URL the edge needs, cut from the text the runtime
//! gives, without a general URL parser (and the Unicode tables one carries into the
//! WebAssembly module).

/// `origin` (`scheme://host[:port]`), `path` (still percent-encoded, `/` at least) and
/// `query` (without `?`, empty when absent); a fragment is dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct UrlParts<'a> {
    pub origin: &'a str,
    pub path: &'a str,
    pub query: &'a str,
}

/// Splits an absolute URL; `None` when it has no `scheme://`.
pub fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let authority = url.find("://")? + 3;
    let path_at = url[authority..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority + i);
    let rest = &url[path_at..];
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    Some(UrlParts {
        origin: &url[..path_at],
        path: if path.is_empty() { "/" } else { path },
        query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_origin_path_and_query() {
        let parts = |url| split_url(url).map(|p| (p.origin, p.path, p.query));
        assert_eq!(
            parts("http://127.0.0.1:8787/api/v1/runs?filter[tag]=a&page[size]=2"),
            Some((
                "http://127.0.0.1:8787",
                "/api/v1/runs",
                "filter[tag]=a&page[size]=2"
            ))
        );
        assert_eq!(
            parts("https://x.dev/api/v1/tasks/a%2Fb/batch#frag"),
            Some(("https://x.dev", "/api/v1/tasks/a%2Fb/batch", ""))
        );
        assert_eq!(parts("https://x.dev"), Some(("https://x.dev", "/", "")));
        assert_eq!(
            parts("https://x.dev?q=1"),
            Some(("https://x.dev", "/", "q=1"))
        );
        assert_eq!(
            parts("https://x.dev/p?a=1?b#c?d"),
            Some(("https://x.dev", "/p", "a=1?b"))
        );
        assert_eq!(parts("/relative"), None);
    }
}
