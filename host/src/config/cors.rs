//! CORS policies from the site file: `[cors]` (site-wide) merged key by key with
//! `[functions.NAME.cors]` into one resolved [`Policy`] per function, validated here so a bad
//! key is reported with its place in the file. What a policy does to requests and responses
//! lives in `http::cors`. With a policy, fnhost:
//!
//! - answers preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) without
//!   invoking the function: `204`, with the allow headers only when the origin, the method and
//!   every requested header are allowed ([`Policy::preflight`]);
//! - refuses (`403`) a request whose `Origin` is neither allowed nor the request's own origin
//!   ([`Policy::allowed`], [`same_origin`]);
//! - adds the `Access-Control-*` headers a response lacks ([`Policy::decorate`]): a header the
//!   function set itself wins.
//!
//! Without any policy configured nothing here runs: requests reach functions as on Netlify.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::{Config, CorsConfig, CorsToken, OneOrMany};

/// Methods allowed when `allowed_methods` is not set.
pub const DEFAULT_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
/// `Access-Control-Max-Age` when `max_age` is not set.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

/// Which origins a policy allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// `"*"`: every origin (never with credentials).
    Any,
    /// Exact origins, lower case, e.g. `https://app.example.com`.
    List(Vec<String>),
}

/// A resolved CORS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Allowed origins.
    pub origins: Origins,
    /// Allowed methods (upper case); `None` = any (`"*"`).
    pub methods: Option<Vec<String>>,
    /// Allowed request headers (lower case); `None` = whatever the preflight asks for.
    pub headers: Option<Vec<String>>,
    /// Response headers exposed to the page (lower case).
    pub exposed: Vec<String>,
    /// `Access-Control-Allow-Credentials: true`.
    pub credentials: bool,
    /// How long a browser may cache a preflight answer.
    pub max_age: Duration,
}

/// A policy that cannot be built: the key at fault, where it is (a span in the file), why.
/// Shown as `fnhost.toml: KEY: WHY`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fnhost.toml: {key}: {message}")]
pub struct CorsError {
    /// Dotted key, e.g. `functions.api.cors.allow_credentials`.
    pub key: String,
    /// Byte span of the offending value in the file, when known.
    pub span: Option<Range<usize>>,
    /// What is wrong.
    pub message: String,
}

/// Every policy of a site: `[cors]`, and `[functions.NAME.cors]` merged over it.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    site: Option<Arc<Policy>>,
    functions: HashMap<String, Arc<Policy>>,
}

impl Policies {
    /// Resolves and validates the policies of `config`.
    pub fn from_config(config: &Config) -> Result<Policies, CorsError> {
        if config.defaults.cors.is_some() {
            return Err(CorsError {
                key: "defaults.cors".into(),
                span: None,
                message: "the site-wide policy is the top-level [cors] table".into(),
            });
        }
        let site = config
            .cors
            .as_ref()
            .map(|c| resolve(None, c, "cors"))
            .transpose()?
            .map(Arc::new);
        let mut functions = HashMap::new();
        for (name, f) in &config.functions {
            if let Some(own) = &f.cors {
                let policy = resolve(config.cors.as_ref(), own, &format!("functions.{name}.cors"))?;
                functions.insert(name.clone(), Arc::new(policy));
            }
        }
        Ok(Policies { site, functions })
    }

    /// No policy anywhere: fnhost adds no CORS headers and refuses nothing.
    pub fn is_empty(&self) -> bool {
        self.site.is_none() && self.functions.is_empty()
    }

    /// The policy of function `name`: its own merged table, else the site-wide one.
    pub fn for_function(&self, name: &str) -> Option<&Policy> {
        self.functions
            .get(name)
            .or(self.site.as_ref())
            .map(|p| &**p)
    }

    /// The site-wide policy.
    pub fn site(&self) -> Option<&Policy> {
        self.site.as_deref()
    }
}

/// Merges `own` over `site` key by key and validates the result; `prefix` names `own`.
fn resolve(site: Option<&CorsConfig>, own: &CorsConfig, prefix: &str) -> Result<Policy, CorsError> {
    let (origins, credentials) = origins_and_credentials(site, own, prefix)?;
    let methods = layered(own, site, |c| &c.allowed_methods)
        .map(|v| v.iter().map(|m| m.to_ascii_uppercase()).collect::<Vec<_>>())
        .unwrap_or_else(|| DEFAULT_METHODS.iter().map(|m| m.to_string()).collect());
    let methods = (!methods.iter().any(|m| m == "*")).then_some(methods);
    let lower = |v: Vec<String>| v.iter().map(|h| h.to_ascii_lowercase()).collect::<Vec<_>>();
    let headers = layered(own, site, |c| &c.allowed_headers)
        .map(lower)
        .filter(|h| !h.iter().any(|x| x == "*"));
    let exposed = layered(own, site, |c| &c.exposed_headers)
        .map(lower)
        .unwrap_or_default();
    if credentials && exposed.iter().any(|h| h == "*") {
        return Err(CorsError {
            key: format!("{prefix}.exposed_headers"),
            span: None,
            message: "\"*\" is not a wildcard on credentialed requests; list the headers".into(),
        });
    }
    let max_age = own
        .max_age
        .or_else(|| site.and_then(|s| s.max_age))
        .map_or(DEFAULT_MAX_AGE, |d| d.0);
    Ok(Policy {
        origins,
        methods,
        headers,
        exposed,
        credentials,
        max_age,
    })
}

/// The allowed origins and whether credentials are allowed, each from the table that set it
/// (the function's own, else the site's); a wildcard mixed with origins, or with credentials,
/// is refused naming the key of the more specific table.
fn origins_and_credentials(
    site: Option<&CorsConfig>,
    own: &CorsConfig,
    prefix: &str,
) -> Result<(Origins, bool), CorsError> {
    // Which table a key came from: the function's own, else the site's.
    let pick = |f: fn(&CorsConfig) -> bool| -> (&CorsConfig, String) {
        if f(own) || site.is_none() {
            (own, prefix.to_string())
        } else {
            (site.unwrap_or(own), "cors".to_string())
        }
    };
    let (o_src, o_table) = pick(|c| c.allowed_origins.is_some());
    let Some(origins) = &o_src.allowed_origins else {
        return Err(CorsError {
            key: format!("{prefix}.allowed_origins"),
            span: None,
            message: "required: the exact origins allowed (\"https://app.example.com\"), or \"*\""
                .into(),
        });
    };
    let list: Vec<String> = origins.get_ref().0.iter().map(|o| o.0.clone()).collect();
    let any = list.iter().any(|o| o == "*");
    if any && list.len() > 1 {
        return Err(CorsError {
            key: format!("{o_table}.allowed_origins"),
            span: Some(origins.span()),
            message: "\"*\" allows every origin and cannot be combined with others".into(),
        });
    }
    let (c_src, c_table) = pick(|c| c.allow_credentials.is_some());
    let credentials = c_src
        .allow_credentials
        .as_ref()
        .is_some_and(|c| *c.get_ref());
    if credentials && any {
        // Name the key the more specific table set.
        let (key, span) = if c_table == prefix || o_table != prefix {
            let c = c_src.allow_credentials.as_ref().map(|c| c.span());
            (format!("{c_table}.allow_credentials"), c)
        } else {
            (format!("{o_table}.allowed_origins"), Some(origins.span()))
        };
        return Err(CorsError {
            key,
            span,
            message: "allow_credentials = true cannot go with allowed_origins = \"*\": the Fetch \
                      standard forbids a wildcard origin on credentialed requests; list the \
                      origins instead"
                .into(),
        });
    }
    let origins = if any {
        Origins::Any
    } else {
        Origins::List(list.into_iter().map(|o| o.to_ascii_lowercase()).collect())
    };
    Ok((origins, credentials))
}

/// A list key of `own`, else of `site`.
fn layered(
    own: &CorsConfig,
    site: Option<&CorsConfig>,
    key: fn(&CorsConfig) -> &Option<OneOrMany<CorsToken>>,
) -> Option<Vec<String>> {
    key(own)
        .as_ref()
        .or_else(|| site.and_then(|s| key(s).as_ref()))
        .map(|l| l.0.iter().map(|t| t.0.clone()).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn policies(toml: &str) -> Result<Policies, String> {
        let config = Config::from_str(toml, std::path::Path::new("fnhost.toml"))
            .map_err(|e| e.to_string())?;
        Policies::from_config(&config).map_err(|e| format!("{}: {}", e.key, e.message))
    }

    #[test]
    fn function_tables_merge_over_the_site() {
        let ps = policies(
            "[cors]\nallowed_origins = [\"https://a.test\"]\nmax_age = \"30s\"\n[functions.api.cors]\nallowed_origins = [\"https://b.test\"]\n[functions.other]\ntimeout = \"1s\"\n",
        )
        .unwrap();
        let api = ps.for_function("api").unwrap();
        assert!(api.allowed("https://b.test") && !api.allowed("https://a.test"));
        assert_eq!(api.max_age, Duration::from_secs(30));
        assert!(ps.for_function("other").unwrap().allowed("https://A.test"));
        assert!(policies("").unwrap().is_empty());
        let only = policies("[functions.api]\ncors = { allowed_origins = [\"https://b.test\"] }\n")
            .unwrap();
        assert!(only.for_function("api").is_some() && only.for_function("x").is_none());
    }

    #[test]
    fn invalid_policies_name_the_key() {
        let e =
            policies("[cors]\nallowed_origins = \"*\"\nallow_credentials = true\n").unwrap_err();
        assert!(
            e.starts_with("fnhost.toml:3:21: cors.allow_credentials: "),
            "{e}"
        );
        assert!(e.contains("Fetch"), "{e}");
        let e = policies(
            "[cors]\nallow_credentials = true\nallowed_origins = [\"https://a.test\"]\n[functions.f.cors]\nallowed_origins = \"*\"\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("fnhost.toml:5:19: functions.f.cors.allowed_origins: "),
            "{e}"
        );
        let e = policies("[functions.f.cors]\nmax_age = \"1m\"\n").unwrap_err();
        assert!(
            e.contains("functions.f.cors.allowed_origins: required"),
            "{e}"
        );
        let e = policies("[cors]\nallowed_origins = [\"https://a.test/\"]\n").unwrap_err();
        assert!(e.starts_with("fnhost.toml:2:19:"), "{e}");
        assert!(e.contains("no path"), "{e}");
        let e = policies("[cors]\nallowed_origin = [\"https://a.test\"]\n").unwrap_err();
        assert!(
            e.starts_with("fnhost.toml:2:1: unknown field `allowed_origin`"),
            "{e}"
        );
        let e = policies("[cors]\nallowed_origins = [\"*\", \"https://a.test\"]\n").unwrap_err();
        assert!(e.contains("cannot be combined"), "{e}");
        let e = policies("[defaults.cors]\nallowed_origins = \"*\"\n").unwrap_err();
        assert!(e.contains("defaults.cors"), "{e}");
    }
}
