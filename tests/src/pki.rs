//! A throw-away PKI, generated once per test binary in a temporary directory.
//!
//! - `ca`: the test CA (ECDSA P-256); `cadir`: a hashed directory holding it.
//! - `ec`, `rsa`: server certificates (ECDSA P-256, RSA-2048) with SANs
//!   DNS:localhost, DNS:tls.test, IP:127.0.0.1, IP:::1.
//! - `a`, `b`, `wild`: named certificates for SNI (a.test, b.test, *.wild.test; DNS SANs only).
//! - `expired`: standard SANs, validity ended 30 days ago.
//! - `untrusted`: standard SANs, issued by another CA (`untrusted_ca`).
//! - `client`: a client certificate, subject O=Test, CN=client (RFC 4514: `CN=client,O=Test`).
//! - `untrusted_client`: a client certificate from the untrusted CA.
//! - `chain`: standard SANs, issued by an intermediate; its cert file holds leaf + intermediate.
//! - `ec_der`, `rsa_der`: the `ec` and `rsa` pairs in DER.
//! - `ec_sec1`: the `ec` pair with its key in the traditional "EC PRIVATE KEY" PEM form.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Name, X509};

/// A certificate file and its key file, with facts the tests check against.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `SHA256:` + lower-case hex of the leaf's DER (the form of `SSL_PEER_CERT_HASH`).
    pub hash: String,
    /// The leaf's subject in RFC 4514 form (last RDN first).
    pub subject: String,
    /// The leaf's common name.
    pub cn: String,
}

#[derive(Debug)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cadir: PathBuf,
    pub untrusted_ca: PathBuf,
    pub ec: Pair,
    pub rsa: Pair,
    pub a: Pair,
    pub b: Pair,
    pub wild: Pair,
    pub expired: Pair,
    pub untrusted: Pair,
    pub client: Pair,
    pub untrusted_client: Pair,
    pub chain: Pair,
    pub ec_der: Pair,
    pub rsa_der: Pair,
    pub ec_sec1: Pair,
}

static RUN_DIR: OnceLock<PathBuf> = OnceLock::new();
static PKI: OnceLock<Pki> = OnceLock::new();
static SCRATCH: AtomicU32 = AtomicU32::new(0);

/// This test binary's temporary directory (`$TMPDIR/stls-tests-<pid>`). Directories left
/// by earlier runs whose process is gone are removed on first use.
pub fn run_dir() -> &'static Path {
    RUN_DIR.get_or_init(|| {
        let tmp = std::env::temp_dir();
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("stls-tests-") {
                    if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let d = tmp.join(format!("stls-tests-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        d
    })
}

/// A fresh, empty directory for one test's files (markers, scripts, payloads).
pub fn scratch(label: &str) -> PathBuf {
    let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
    let label: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let d = run_dir().join(format!("scratch-{n}-{label}"));
    fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
    d
}

/// The PKI, generated on first use.
pub fn pki() -> &'static Pki {
    PKI.get_or_init(|| generate(&run_dir().join("pki")))
}

struct Issuer {
    cert: X509,
    key: PKey<Private>,
}

fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256 group");
    PKey::from_ec_key(EcKey::generate(&group).expect("EC key generation")).expect("EC PKey")
}

fn rsa_key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).expect("RSA key generation")).expect("RSA PKey")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

const DAY: i64 = 86_400;

static SERIAL: AtomicU32 = AtomicU32::new(1);

struct Spec<'a> {
    /// (field, value) in DN order, e.g. [("O","Test"),("CN","client")].
    dn: &'a [(&'a str, &'a str)],
    key: &'a PKey<Private>,
    ca: bool,
    san: &'a [&'a str],
    server: bool,
    client: bool,
    not_before: i64,
    not_after: i64,
}

fn build(spec: &Spec, issuer: Option<&Issuer>) -> X509 {
    let mut name = X509Name::builder().expect("name builder");
    for (k, v) in spec.dn {
        name.append_entry_by_text(k, v).expect("DN entry");
    }
    let name = name.build();
    let mut b = X509::builder().expect("X509 builder");
    b.set_version(2).expect("version");
    let serial = BigNum::from_u32(SERIAL.fetch_add(1, Ordering::Relaxed) + 1000)
        .and_then(|bn| Asn1Integer::from_bn(&bn))
        .expect("serial");
    b.set_serial_number(&serial).expect("serial");
    b.set_subject_name(&name).expect("subject");
    match issuer {
        Some(i) => b.set_issuer_name(i.cert.subject_name()).expect("issuer"),
        None => b.set_issuer_name(&name).expect("issuer"),
    }
    b.set_pubkey(spec.key).expect("pubkey");
    b.set_not_before(&Asn1Time::from_unix(spec.not_before).expect("time"))
        .expect("not before");
    b.set_not_after(&Asn1Time::from_unix(spec.not_after).expect("time"))
        .expect("not after");
    if spec.ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
            .expect("bc");
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .expect("ku"),
        )
        .expect("ku");
    } else {
        b.append_extension(BasicConstraints::new().critical().build().expect("bc"))
            .expect("bc");
        let mut ku = KeyUsage::new();
        ku.critical().digital_signature();
        if spec.key.rsa().is_ok() {
            ku.key_encipherment();
        }
        b.append_extension(ku.build().expect("ku")).expect("ku");
        let mut eku = ExtendedKeyUsage::new();
        if spec.server {
            eku.server_auth();
        }
        if spec.client {
            eku.client_auth();
        }
        b.append_extension(eku.build().expect("eku")).expect("eku");
    }
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))
        .expect("ski");
    b.append_extension(ski).expect("ski");
    if let Some(i) = issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&i.cert), None))
            .expect("aki");
        b.append_extension(aki).expect("aki");
    }
    if !spec.san.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for s in spec.san {
            if let Some(ip) = s.strip_prefix("IP:") {
                san.ip(ip);
            } else {
                san.dns(s.strip_prefix("DNS:").unwrap_or(s));
            }
        }
        let ext = san
            .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))
            .expect("san");
        b.append_extension(ext).expect("san");
    }
    let signer = issuer.map(|i| &i.key).unwrap_or(spec.key);
    b.sign(signer, MessageDigest::sha256()).expect("sign");
    b.build()
}

fn write(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn rfc4514(dn: &[(&str, &str)]) -> String {
    dn.iter()
        .rev()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn hash_of(cert: &X509) -> String {
    let der = cert.to_der().expect("DER");
    format!("SHA256:{}", crate::payload::sha256_hex(&der))
}

const STD_SAN: &[&str] = &["DNS:localhost", "DNS:tls.test", "IP:127.0.0.1", "IP:::1"];

fn generate(dir: &Path) -> Pki {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let t = now();
    let (nb, na) = (t - DAY, t + 30 * DAY);

    let mk_ca = |cn: &str, issuer: Option<&Issuer>| -> Issuer {
        let key = ec_key();
        let dn = [("O", "stls test"), ("CN", cn)];
        let cert = build(
            &Spec {
                dn: &dn,
                key: &key,
                ca: true,
                san: &[],
                server: false,
                client: false,
                not_before: nb,
                not_after: na,
            },
            issuer,
        );
        Issuer { cert, key }
    };
    let ca = mk_ca("stls test CA", None);
    let other_ca = mk_ca("stls untrusted CA", None);
    let inter = mk_ca("stls test intermediate", Some(&ca));

    let ca_path = dir.join("ca.pem");
    write(&ca_path, &ca.cert.to_pem().expect("pem"));
    let untrusted_ca_path = dir.join("untrusted-ca.pem");
    write(&untrusted_ca_path, &other_ca.cert.to_pem().expect("pem"));
    let cadir = dir.join("cadir");
    fs::create_dir_all(&cadir).expect("creating cadir");
    write(
        &cadir.join(format!("{:08x}.0", ca.cert.subject_name_hash())),
        &ca.cert.to_pem().expect("pem"),
    );

    struct Leaf<'a> {
        name: &'a str,
        dn: &'a [(&'a str, &'a str)],
        rsa: bool,
        san: &'a [&'a str],
        client: bool,
        issuer: &'a Issuer,
        extra_chain: Option<&'a X509>,
        validity: (i64, i64),
    }
    let leaf = |l: Leaf| -> (Pair, X509, PKey<Private>) {
        let key = if l.rsa { rsa_key() } else { ec_key() };
        let cert = build(
            &Spec {
                dn: l.dn,
                key: &key,
                ca: false,
                san: l.san,
                server: !l.client,
                client: true,
                not_before: l.validity.0,
                not_after: l.validity.1,
            },
            Some(l.issuer),
        );
        let cert_path = dir.join(format!("{}.pem", l.name));
        let key_path = dir.join(format!("{}.key", l.name));
        let mut pem = cert.to_pem().expect("pem");
        if let Some(extra) = l.extra_chain {
            pem.extend(extra.to_pem().expect("pem"));
        }
        write(&cert_path, &pem);
        write(&key_path, &key.private_key_to_pem_pkcs8().expect("key pem"));
        let cn =
            l.dn.iter()
                .find(|(k, _)| *k == "CN")
                .map(|(_, v)| v.to_string())
                .unwrap_or_default();
        (
            Pair {
                cert: cert_path,
                key: key_path,
                hash: hash_of(&cert),
                subject: rfc4514(l.dn),
                cn,
            },
            cert,
            key,
        )
    };
    let std_leaf = |name: &'static str, cn: &'static str, rsa: bool| Leaf {
        name,
        dn: if cn == "localhost" {
            &[("O", "Test"), ("CN", "localhost")]
        } else {
            &[("O", "Test"), ("CN", "tls.test")]
        },
        rsa,
        san: STD_SAN,
        client: false,
        issuer: &ca,
        extra_chain: None,
        validity: (nb, na),
    };

    let (ec, ec_cert, ec_keyv) = leaf(std_leaf("server-ec", "localhost", false));
    let (rsa, rsa_cert, rsa_keyv) = leaf(std_leaf("server-rsa", "localhost", true));
    let (a, _, _) = leaf(Leaf {
        name: "a.test",
        dn: &[("O", "Test"), ("CN", "a.test")],
        san: &["DNS:a.test"],
        ..std_leaf("a.test", "x", false)
    });
    let (b, _, _) = leaf(Leaf {
        name: "b.test",
        dn: &[("O", "Test"), ("CN", "b.test")],
        san: &["DNS:b.test"],
        ..std_leaf("b.test", "x", false)
    });
    let (wild, _, _) = leaf(Leaf {
        name: "wild.test",
        dn: &[("O", "Test"), ("CN", "*.wild.test")],
        san: &["DNS:*.wild.test"],
        ..std_leaf("wild.test", "x", false)
    });
    let (expired, _, _) = leaf(Leaf {
        validity: (t - 60 * DAY, t - 30 * DAY),
        ..std_leaf("expired", "localhost", false)
    });
    let (untrusted, _, _) = leaf(Leaf {
        issuer: &other_ca,
        ..std_leaf("untrusted", "localhost", false)
    });
    let (client, _, _) = leaf(Leaf {
        name: "client",
        dn: &[("O", "Test"), ("CN", "client")],
        san: &[],
        client: true,
        ..std_leaf("client", "x", false)
    });
    let (untrusted_client, _, _) = leaf(Leaf {
        name: "untrusted-client",
        dn: &[("O", "Test"), ("CN", "client")],
        san: &[],
        client: true,
        issuer: &other_ca,
        ..std_leaf("untrusted-client", "x", false)
    });
    let (chain, _, _) = leaf(Leaf {
        issuer: &inter,
        extra_chain: Some(&inter.cert),
        ..std_leaf("chain", "localhost", false)
    });

    let der_pair = |name: &str, p: &Pair, cert: &X509, key: &PKey<Private>| -> Pair {
        let c = dir.join(format!("{name}.crt.der"));
        let k = dir.join(format!("{name}.key.der"));
        write(&c, &cert.to_der().expect("der"));
        write(&k, &key.private_key_to_der().expect("key der"));
        Pair {
            cert: c,
            key: k,
            ..p.clone()
        }
    };
    let ec_der = der_pair("server-ec", &ec, &ec_cert, &ec_keyv);
    let rsa_der = der_pair("server-rsa", &rsa, &rsa_cert, &rsa_keyv);
    let sec1 = dir.join("server-ec.sec1.key");
    write(
        &sec1,
        &ec_keyv
            .ec_key()
            .expect("ec key")
            .private_key_to_pem()
            .expect("sec1 pem"),
    );
    let ec_sec1 = Pair {
        key: sec1,
        ..ec.clone()
    };

    Pki {
        dir: dir.to_path_buf(),
        ca: ca_path,
        cadir,
        untrusted_ca: untrusted_ca_path,
        ec,
        rsa,
        a,
        b,
        wild,
        expired,
        untrusted,
        client,
        untrusted_client,
        chain,
        ec_der,
        rsa_der,
        ec_sec1,
    }
}
