//! Rewrites, redirects and proxies in Netlify's `_redirects` syntax, from `DIR/_redirects` and
//! `[[redirects]]` in fnhost.toml (the file's rules first, as on Netlify).
//!
//! A line is `FROM TO [STATUS][!]`; `#` starts a comment line. `FROM` is a path whose segments
//! may be `:name` placeholders and whose last segment may be `*`; `TO` may use those
//! placeholders anywhere and `:splat` for what `*` matched. Status `200` rewrites to a local
//! path (routed again inside fnhost, once) or, when `TO` is an `http(s)://` URL, proxies to it;
//! `301`, `302`, `303`, `307`, `308` redirect with `Location`; the default is `301`. The request's
//! query string is passed on. Rules are tried in order and the first that applies wins; a rule
//! applies to a path some function route answers only when forced with `!` (shadowing).
//!
//! Matching is pure (no hyper, no wasmtime); the [`proxy`] module at the end does the I/O.

use std::path::{Path, PathBuf};

/// Statuses a rule may have.
pub const STATUSES: &[u16] = &[200, 301, 302, 303, 307, 308];

/// One `FROM` segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Splat,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    from: String,
    segments: Vec<Segment>,
    to: String,
    /// `200` (rewrite or proxy) or a redirect status.
    pub status: u16,
    /// Applies even where a function route answers the path.
    pub force: bool,
}

/// What a rule makes of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Serve this local path and query instead (routed inside fnhost).
    Rewrite(String),
    /// Forward the request to this absolute URL and stream its answer back.
    Proxy(String),
    /// Answer `status` with this `Location`.
    Redirect {
        /// 301, 302, 303, 307 or 308.
        status: u16,
        /// Where to.
        location: String,
    },
}

impl Rule {
    /// Builds a rule, checking `from`, `to` and `status`.
    pub fn new(from: &str, to: &str, status: u16, force: bool) -> Result<Rule, String> {
        let segments = parse_from(from)?;
        if !STATUSES.contains(&status) {
            return Err(format!(
                "status {status} is not supported (fnhost serves functions, not static pages): \
                 use 200 (rewrite or proxy) or 301, 302, 303, 307, 308"
            ));
        }
        let absolute = to.starts_with("http://") || to.starts_with("https://");
        if !absolute && !to.starts_with('/') {
            return Err(format!(
                "`to` {to:?} must be a path starting with `/` or an http:// or https:// URL"
            ));
        }
        let has_splat = segments.last() == Some(&Segment::Splat);
        for name in placeholders(to) {
            let known = if name == "splat" {
                has_splat
            } else {
                segments.contains(&Segment::Param(name.to_string()))
            };
            if !known {
                return Err(if name == "splat" {
                    format!("`:splat` in {to:?} needs `from` to end in `/*`")
                } else {
                    format!("`:{name}` in {to:?} is not a placeholder of `from` {from:?}")
                });
            }
        }
        Ok(Rule {
            from: from.to_string(),
            segments,
            to: to.to_string(),
            status,
            force,
        })
    }

    /// Parses one `_redirects` line; `None` for a blank or comment line.
    pub fn parse_line(line: &str) -> Result<Option<Rule>, String> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(None);
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            return Err("expected `FROM TO [STATUS][!]`".into());
        }
        let is_target = |f: &str| f.starts_with('/') || f.contains("://");
        if fields[1].contains('=') && !is_target(fields[1]) {
            return Err(format!(
                "query-parameter matching ({:?}) is not supported",
                fields[1]
            ));
        }
        let (from, to) = (fields[0], fields[1]);
        let (status, force) = match fields.get(2) {
            None => (301, false),
            Some(s) => {
                let (num, force) = match s.strip_suffix('!') {
                    Some(n) => (n, true),
                    None => (*s, false),
                };
                let status = num.parse::<u16>().map_err(|_| {
                    format!("{s:?} is not a status: expected e.g. `200`, `301` or `200!`")
                })?;
                (status, force)
            }
        };
        if let Some(extra) = fields.get(3) {
            return Err(if extra.contains('=') {
                format!("conditions ({extra:?}: Country, Language, Role, ...) are not supported")
            } else {
                format!("unexpected {extra:?} after the status")
            });
        }
        Rule::new(from, to, status, force).map(Some)
    }

    /// `from` as written.
    pub fn from(&self) -> &str {
        &self.from
    }

    /// `to` as written.
    pub fn to(&self) -> &str {
        &self.to
    }

    /// Captures (`:name` → value, `splat` → the rest) when `path` matches `from`.
    fn matches(&self, path: &str) -> Option<Vec<(&str, String)>> {
        let rest = path.strip_prefix('/')?;
        let mut parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        // A trailing slash is ignored, as by the router.
        if parts.last() == Some(&"") {
            parts.pop();
        }
        let mut captures = Vec::new();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Splat => {
                    captures.push(("splat", parts.get(i..).unwrap_or(&[]).join("/")));
                    return Some(captures);
                }
                Segment::Literal(l) => {
                    if parts.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let value = parts.get(i).filter(|v| !v.is_empty())?;
                    captures.push((name.as_str(), (*value).to_string()));
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(captures)
    }

    /// `to` with the captures substituted and the request's query appended.
    fn target(&self, captures: &[(&str, String)], query: Option<&str>) -> String {
        let mut out = String::with_capacity(self.to.len() + 16);
        let mut rest = self.to.as_str();
        while let Some(i) = rest.find(':') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let name = placeholder_name(after);
            match captures
                .iter()
                .find(|(n, _)| !name.is_empty() && *n == name)
            {
                Some((_, value)) => {
                    out.push_str(value);
                    rest = &after[name.len()..];
                }
                None => {
                    out.push(':');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        match query.filter(|q| !q.is_empty()) {
            Some(q) if out.contains('?') => format!("{out}&{q}"),
            Some(q) => format!("{out}?{q}"),
            None => out,
        }
    }

    /// What this rule does to `path?query`, if it matches.
    pub fn apply(&self, path: &str, query: Option<&str>) -> Option<Action> {
        let captures = self.matches(path)?;
        let target = self.target(&captures, query);
        Some(match self.status {
            200 if target.starts_with('/') => Action::Rewrite(target),
            200 => Action::Proxy(target),
            status => Action::Redirect {
                status,
                location: target,
            },
        })
    }
}

/// The `[A-Za-z_][A-Za-z0-9_]*` name at the start of `s`, or "".
fn placeholder_name(s: &str) -> &str {
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return "";
    }
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every `:name` in `to`.
fn placeholders(to: &str) -> Vec<&str> {
    to.match_indices(':')
        .map(|(i, _)| placeholder_name(&to[i + 1..]))
        .filter(|n| !n.is_empty())
        .collect()
}

fn parse_from(from: &str) -> Result<Vec<Segment>, String> {
    if from.starts_with("http://") || from.starts_with("https://") {
        return Err(format!(
            "`from` {from:?}: domain-level rules are not supported; use a path"
        ));
    }
    let rest = from
        .strip_prefix('/')
        .ok_or_else(|| format!("`from` {from:?} must be a path starting with `/`"))?;
    if from.contains('?') {
        return Err(format!(
            "`from` {from:?}: query-parameter matching is not supported"
        ));
    }
    let parts: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    let mut segments = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if *part == "*" {
            if !last {
                return Err(format!("`from` {from:?}: `*` may only be the last segment"));
            }
            segments.push(Segment::Splat);
        } else if let Some(name) = part.strip_prefix(':') {
            if placeholder_name(name) != name || name.is_empty() || name == "splat" {
                return Err(format!(
                    "`from` {from:?}: `:{name}` needs a name of letters, digits or `_` (not `splat`)"
                ));
            }
            segments.push(Segment::Param(name.to_string()));
        } else if part.contains('*') {
            return Err(format!(
                "`from` {from:?}: `*` must be a whole segment (`/path/*`)"
            ));
        } else if part.is_empty() {
            if !last {
                return Err(format!("`from` {from:?}: empty segment (`//`)"));
            }
        } else {
            segments.push(Segment::Literal((*part).to_string()));
        }
    }
    Ok(segments)
}

/// A bad `_redirects` line.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct RedirectsError {
    /// The file.
    pub file: PathBuf,
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The rules of a site, in the order they are tried.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Parses the text of a `_redirects` file; `file` labels errors.
    pub fn parse(text: &str, file: &Path) -> Result<Vec<Rule>, RedirectsError> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            match Rule::parse_line(line) {
                Ok(Some(rule)) => rules.push(rule),
                Ok(None) => {}
                Err(message) => {
                    return Err(RedirectsError {
                        file: file.to_owned(),
                        line: i + 1,
                        message,
                    });
                }
            }
        }
        Ok(rules)
    }

    /// `dir/_redirects` when present, then `more` (fnhost.toml's `[[redirects]]`).
    pub fn load(dir: &Path, more: impl IntoIterator<Item = Rule>) -> Result<Rules, RedirectsError> {
        let file = dir.join("_redirects");
        let mut rules = match std::fs::read_to_string(&file) {
            Ok(text) => Rules::parse(&text, &file)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(RedirectsError {
                    file,
                    line: 0,
                    message: format!("cannot read: {e}"),
                });
            }
        };
        rules.extend(more);
        Ok(Rules { rules })
    }

    /// Rules in order.
    pub fn new(rules: Vec<Rule>) -> Rules {
        Rules { rules }
    }

    /// No rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every rule, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// The action of the first rule that applies to `path?query`. `routed` says whether a
    /// function route answers `path`; it is asked at most once, and only when an unforced rule
    /// matches (such a rule is shadowed by the route).
    pub fn resolve(
        &self,
        path: &str,
        query: Option<&str>,
        routed: impl FnOnce() -> bool,
    ) -> Option<Action> {
        let mut routed = Some(routed);
        let mut shadowed = None;
        for rule in &self.rules {
            let Some(action) = rule.apply(path, query) else {
                continue;
            };
            if !rule.force {
                let is = *shadowed.get_or_insert_with(|| routed.take().is_some_and(|f| f()));
                if is {
                    continue;
                }
            }
            return Some(action);
        }
        None
    }
}

/// Forwarding a request to an `http://` upstream, streaming both bodies.
pub mod proxy {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderValue, Request, Response, StatusCode, header};
    use http_body::Frame;
    use http_body_util::BodyExt;

    use crate::engine::{Body, BodyError};
    use crate::error::text;

    /// Time allowed from the start of forwarding to the upstream's response head.
    pub const TIMEOUT: Duration = Duration::from_secs(30);

    /// Hop-by-hop headers: about one connection, never forwarded.
    const HOP_BY_HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];

    /// Forwards `req` to `target` (an absolute URL) and streams the answer back. `https`
    /// upstreams answer `502` (no TLS client in fnhost); an unreachable upstream `502`; no
    /// response head within `timeout` `504`.
    pub async fn forward<B>(req: Request<B>, target: &str, timeout: Duration) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let uri: http::Uri = match target.parse() {
            Ok(u) => u,
            Err(e) => return bad_gateway(format!("bad proxy target {target}: {e}")),
        };
        if uri.scheme_str() == Some("https") {
            return bad_gateway(format!(
                "https proxy not supported (fnhost has no TLS client): {target}"
            ));
        }
        let Some(authority) = uri.authority().cloned() else {
            return bad_gateway(format!("bad proxy target {target}"));
        };
        let addr = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let (mut parts, body) = req.into_parts();
        let original_host = parts.headers.remove(header::HOST);
        for name in HOP_BY_HOP {
            parts.headers.remove(*name);
        }
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(header::HOST, v);
        }
        if let Some(h) = original_host {
            parts.headers.insert("x-forwarded-host", h);
        }
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static("http"));
        parts.uri = uri.path_and_query().map_or_else(
            || http::Uri::from_static("/"),
            |pq| {
                pq.as_str()
                    .parse()
                    .unwrap_or_else(|_| http::Uri::from_static("/"))
            },
        );
        parts.version = http::Version::HTTP_11;
        let body = body.map_err(Into::into).boxed_unsync();
        let upstream = Request::from_parts(parts, body);

        let exchange = async {
            let stream = tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("upstream {addr}: {e}"))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("proxy connection: {e}");
                }
            });
            sender
                .send_request(upstream)
                .await
                .map_err(|e| format!("upstream {addr}: {e}"))
        };
        let resp = match tokio::time::timeout(timeout, exchange).await {
            Err(_) => {
                tracing::warn!("proxy to {target}: no response within {timeout:?}");
                return text(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("upstream did not answer within {timeout:?}\n"),
                );
            }
            Ok(Err(e)) => {
                tracing::warn!("proxy to {target}: {e}");
                return bad_gateway(e);
            }
            Ok(Ok(resp)) => resp,
        };
        let (mut parts, body) = resp.into_parts();
        for name in HOP_BY_HOP {
            parts.headers.remove(*name);
        }
        let body = EndOnError {
            inner: body,
            target: target.to_string(),
            done: false,
        };
        Response::from_parts(parts, body.boxed_unsync())
    }

    fn bad_gateway(why: String) -> Response<Body> {
        tracing::debug!("proxy: {why}");
        text(StatusCode::BAD_GATEWAY, format!("bad gateway: {why}\n"))
    }

    /// The upstream body. A read error mid-body ends the stream (logged): `engine::BodyError`
    /// has no public constructor. With a `Content-Length`, hyper then aborts the connection
    /// instead of sending a short body.
    struct EndOnError {
        inner: hyper::body::Incoming,
        target: String,
        done: bool,
    }

    impl http_body::Body for EndOnError {
        type Data = Bytes;
        type Error = BodyError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
            if self.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!("proxy to {}: body cut off: {e}", self.target);
                    self.done = true;
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        }

        fn is_end_stream(&self) -> bool {
            self.done || self.inner.is_end_stream()
        }

        fn size_hint(&self) -> http_body::SizeHint {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Rules {
        Rules::new(Rules::parse(text, Path::new("_redirects")).unwrap())
    }

    fn err(text: &str) -> String {
        Rules::parse(text, Path::new("functions/_redirects"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn forum_rule_rewrites_to_the_function() {
        let r = rules("/api/background/*  /.netlify/functions/:splat  200!\n");
        assert_eq!(
            r.resolve("/api/background/report-background", Some("a=1"), || true),
            Some(Action::Rewrite(
                "/.netlify/functions/report-background?a=1".into()
            ))
        );
        assert_eq!(r.resolve("/api/other", None, || false), None);
    }

    #[test]
    fn placeholders_splat_and_query() {
        let r = rules(
            "# comment\n\n/news/:year/:month/:slug  /blog-:year-:month/:slug?src=news  302\n/files/*  /store/:splat\n",
        );
        assert_eq!(
            r.resolve("/news/2024/05/hello", Some("x=1"), || false),
            Some(Action::Redirect {
                status: 302,
                location: "/blog-2024-05/hello?src=news&x=1".into()
            })
        );
        assert_eq!(r.resolve("/news/2024/05", None, || false), None);
        assert_eq!(
            r.resolve("/files/a/b.txt", None, || false),
            Some(Action::Redirect {
                status: 301,
                location: "/store/a/b.txt".into()
            })
        );
        assert_eq!(
            r.resolve("/files", None, || false),
            Some(Action::Redirect {
                status: 301,
                location: "/store/".into()
            })
        );
    }

    #[test]
    fn unforced_rules_are_shadowed_by_routes() {
        let r = rules(
            "/.netlify/functions/hello  /.netlify/functions/echo  200\n/*  /.netlify/functions/echo  200\n",
        );
        // A route answers the path: the unforced rules do not apply.
        assert_eq!(r.resolve("/.netlify/functions/hello", None, || true), None);
        assert_eq!(
            r.resolve("/.netlify/functions/hello", None, || false),
            Some(Action::Rewrite("/.netlify/functions/echo".into()))
        );
        let forced = rules("/.netlify/functions/hello  /.netlify/functions/echo  200!\n");
        assert_eq!(
            forced.resolve("/.netlify/functions/hello", None, || panic!("not asked")),
            Some(Action::Rewrite("/.netlify/functions/echo".into()))
        );
    }

    #[test]
    fn proxies_keep_ports_and_placeholders() {
        let r = rules("/ext/:id/*  http://127.0.0.1:9000/v1/:id/:splat  200\n");
        assert_eq!(
            r.resolve("/ext/7/a/b", Some("q=1"), || false),
            Some(Action::Proxy("http://127.0.0.1:9000/v1/7/a/b?q=1".into()))
        );
    }

    #[test]
    fn toml_tables_are_the_same_rules() {
        use crate::config::Config;
        let parse =
            |t: &str| Config::from_str(t, Path::new("fnhost.toml")).map_err(|e| e.to_string());
        let c = parse(
            "[[redirects]]\nfrom = \"/api/background/*\"\nto = \"/.netlify/functions/:splat\"\nstatus = 200\nforce = true\n[[redirects]]\nfrom = \"/old\"\nto = \"/new\"\n",
        )
        .unwrap();
        let r = Rules::new(c.redirects.iter().map(|r| r.0.clone()).collect());
        assert_eq!(
            r.resolve("/api/background/x", None, || true),
            Some(Action::Rewrite("/.netlify/functions/x".into()))
        );
        assert_eq!(
            r.resolve("/old", None, || false),
            Some(Action::Redirect {
                status: 301,
                location: "/new".into()
            })
        );
        let e =
            parse("[server]\n\n[[redirects]]\nfrom = \"/a\"\nto = \"/b/:splat\"\n").unwrap_err();
        assert!(e.starts_with("fnhost.toml:3:"), "{e}");
        assert!(e.contains("needs `from` to end in `/*`"), "{e}");
        let e = parse("[[redirects]]\nfrom = \"/a\"\nto = \"/b\"\nconditions = {}\n").unwrap_err();
        assert!(e.contains("unknown field `conditions`"), "{e}");
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        assert_eq!(
            err("/ok /fine\n\nnope /x\n"),
            "functions/_redirects:3: `from` \"nope\" must be a path starting with `/`"
        );
        assert!(err("/a\n").contains(":1: expected `FROM TO"));
        assert!(err("/a /b 404\n").contains("status 404 is not supported"));
        assert!(err("/a /b two\n").contains("is not a status"));
        assert!(err("/a /b/:splat\n").contains("needs `from` to end in `/*`"));
        assert!(err("/a/:x /b/:y\n").contains("`:y`"));
        assert!(err("/a/*/b /c\n").contains("last segment"));
        assert!(err("/a /b 302 Country=us\n").contains("conditions"));
        assert!(err("/store id=:id /b/:id 301\n").contains("query-parameter"));
        assert!(err("/a ftp://x 200\n").contains("must be a path"));
        assert!(err("https://x.test/* /b 301\n").contains("domain-level"));
    }
}
