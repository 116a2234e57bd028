//! The certificates fnhost's TLS clients trust: Mozilla's roots (`webpki-roots`), plus the CA
//! certificates of a PEM file the site names (`[server] outbound_ca` for guests' requests,
//! `[telemetry] certificate` for the collector).

use std::path::Path;

use rustls::pki_types::{CertificateDer, pem::PemObject as _};

/// Mozilla's roots, plus every certificate of the PEM file `extra`; an error names `setting`
/// and the file.
pub fn roots(extra: Option<&Path>, setting: &str) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let Some(path) = extra else {
        return Ok(roots);
    };
    let named = |e: &dyn std::fmt::Display| anyhow::anyhow!("{setting} {}: {e}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| named(&e))?;
    if certs.is_empty() {
        return Err(named(&"no certificate in the file"));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| named(&e))?;
    }
    Ok(roots)
}
