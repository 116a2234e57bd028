//! Applying `_redirects` rules to a request (pure): which rule applies, and what it makes of
//! the request — a rewrite, a redirect or a proxied forward. Parsing lives in
//! [`crate::config::redirects`]; forwarding in [`super::proxy`].

use crate::config::pattern::REST;
use crate::config::redirects::{Rule, Rules, SPLAT, placeholder_name};

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

/// What `rule` does to `path?query`, if it matches.
pub fn apply(rule: &Rule, path: &str, query: Option<&str>) -> Option<Action> {
    let captures = rule.from.matches(path)?;
    let target = target(rule, &captures, query);
    Some(match rule.status {
        200 if target.starts_with('/') => Action::Rewrite(target),
        200 => Action::Proxy(target),
        status => Action::Redirect {
            status,
            location: target,
        },
    })
}

/// `to` with the captures substituted (`:splat` is what `*` matched) and the request's query
/// appended.
fn target(rule: &Rule, captures: &[(&str, String)], query: Option<&str>) -> String {
    let to = rule.to.as_str();
    let mut out = String::with_capacity(to.len() + 16);
    let mut rest = to;
    while let Some(i) = rest.find(':') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let name = placeholder_name(after);
        let capture = if name == SPLAT { REST } else { name };
        match captures
            .iter()
            .find(|(n, _)| !name.is_empty() && *n == capture)
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

/// The action of the first rule that applies to `path?query`. `routed` says whether a
/// function route answers `path`; it is asked at most once, and only when an unforced rule
/// matches (such a rule is shadowed by the route).
pub fn resolve(
    rules: &Rules,
    path: &str,
    query: Option<&str>,
    routed: impl FnOnce() -> bool,
) -> Option<Action> {
    resolve_indexed(rules, path, query, routed).map(|(_, action)| action)
}

/// [`resolve`], with the index of the rule that applies (its rate limit is kept by index).
pub fn resolve_indexed(
    rules: &Rules,
    path: &str,
    query: Option<&str>,
    routed: impl FnOnce() -> bool,
) -> Option<(usize, Action)> {
    let mut routed = Some(routed);
    let mut shadowed = None;
    for (index, rule) in rules.iter().enumerate() {
        let Some(action) = apply(rule, path, query) else {
            continue;
        };
        if !rule.force {
            let is = *shadowed.get_or_insert_with(|| routed.take().is_some_and(|f| f()));
            if is {
                continue;
            }
        }
        return Some((index, action));
    }
    None
}

/// Refuses a request path with an empty segment (`//`, but a trailing `/` is fine) or a `.` or
/// `..` segment, percent-encoded or not: the router, a rule and a proxied upstream would each
/// read it differently (`/api/../admin`, `/go//evil.com`).
pub fn check_path(path: &str) -> Result<(), String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("path {path:?} does not start with `/`"));
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if (segment.is_empty() && i != last) || decoded == "." || decoded == ".." {
            return Err(format!("path {path:?} has an empty, `.` or `..` segment"));
        }
    }
    Ok(())
}

/// Whether a redirect target would leave the site: a browser reads `//host` and `/\host` as
/// another host.
pub fn is_off_site(location: &str) -> bool {
    location.starts_with("//") || location.starts_with("/\\")
}

/// The limiters a node shares with the others: its functions' and its rules'.
impl crate::functions::rate::SharedLimits for super::Served {
    fn limiters(&self) -> Vec<(String, &crate::functions::rate::RateLimiter)> {
        let mut all = self.table.limiters();
        let rules = (self.edge.redirects.iter()).zip(&self.edge.rule_limits);
        all.extend(rules.enumerate().filter_map(|(index, (rule, limit))| {
            let limit = limit.as_ref()?;
            Some((format!("rule:{index}:{}", rule.from), limit))
        }));
        all
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn rules(text: &str) -> Rules {
        Rules::new(Rules::parse(text, Path::new("_redirects")).unwrap())
    }

    #[test]
    fn forum_rule_rewrites_to_the_function() {
        let r = rules("/api/background/*  /.netlify/functions/:splat  200!\n");
        assert_eq!(
            resolve(&r, "/api/background/report-background", Some("a=1"), || {
                true
            }),
            Some(Action::Rewrite(
                "/.netlify/functions/report-background?a=1".into()
            ))
        );
        assert_eq!(resolve(&r, "/api/other", None, || false), None);
    }

    #[test]
    fn placeholders_splat_and_query() {
        let r = rules(
            "# comment\n\n/news/:year/:month/:slug  /blog-:year-:month/:slug?src=news  302\n/files/*  /store/:splat\n",
        );
        assert_eq!(
            resolve(&r, "/news/2024/05/hello", Some("x=1"), || false),
            Some(Action::Redirect {
                status: 302,
                location: "/blog-2024-05/hello?src=news&x=1".into()
            })
        );
        assert_eq!(resolve(&r, "/news/2024/05", None, || false), None);
        assert_eq!(
            resolve(&r, "/files/a/b.txt", None, || false),
            Some(Action::Redirect {
                status: 301,
                location: "/store/a/b.txt".into()
            })
        );
        assert_eq!(
            resolve(&r, "/files", None, || false),
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
        assert_eq!(
            resolve(&r, "/.netlify/functions/hello", None, || true),
            None
        );
        assert_eq!(
            resolve(&r, "/.netlify/functions/hello", None, || false),
            Some(Action::Rewrite("/.netlify/functions/echo".into()))
        );
        let forced = rules("/.netlify/functions/hello  /.netlify/functions/echo  200!\n");
        assert_eq!(
            resolve(&forced, "/.netlify/functions/hello", None, || panic!(
                "not asked"
            )),
            Some(Action::Rewrite("/.netlify/functions/echo".into()))
        );
    }

    #[test]
    fn proxies_keep_ports_and_placeholders() {
        let r = rules("/ext/:id/*  http://127.0.0.1:9000/v1/:id/:splat  200\n");
        assert_eq!(
            resolve(&r, "/ext/7/a/b", Some("q=1"), || false),
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
            resolve(&r, "/api/background/x", None, || true),
            Some(Action::Rewrite("/.netlify/functions/x".into()))
        );
        assert_eq!(
            resolve(&r, "/old", None, || false),
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

    /// Regression: `/go/*  /:splat  301` answered `GET /go//evil.com` with
    /// `Location: //evil.com`, an open redirect; `..` passed through to proxies.
    #[test]
    fn dot_segments_and_empty_segments_are_refused_and_off_site_locations_caught() {
        for bad in [
            "/go//evil.com",
            "//evil.com",
            "/api/../admin",
            "/api/./x",
            "/api/%2e%2e/admin",
            "/api/%2E/x",
            "/..",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for good in ["/", "/a", "/a/", "/a/b.c", "/a/..b", "/a/.well-known/x"] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
        let r = rules("/go/*  /:splat  301\n");
        match resolve(&r, "/go/x/y", None, || false) {
            Some(Action::Redirect { location, .. }) => assert!(!is_off_site(&location)),
            other => panic!("{other:?}"),
        }
        assert!(is_off_site("//evil.com"));
        assert!(is_off_site("/\\evil.com"));
        assert!(!is_off_site("/evil.com"));
    }
}
