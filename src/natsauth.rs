//! `fhirstream nats-auth`: nats-server users that let each tenant's
//! analytics client read its own events and nothing else.
//!
//! The permission model, and why each rule is there (every rule was checked
//! against nats-server 2.15.1, see `tests/nats_auth.rs`):
//!
//! - A tenant may create only its own, named consumers, through the
//!   filtered create API `$JS.API.CONSUMER.CREATE.{stream}.{consumer}.{filter}`
//!   with the filter inside `fhir.{tenant}.>`. The server refuses a request
//!   whose body names another filter than its subject (error 10131), and a
//!   body with `filter_subjects` on this API (10137); the unfiltered create
//!   subjects are not allowed at all. So the filter is pinned.
//! - Consumer names are fixed here, `{tenant}_{name}`, never a wildcard: a
//!   wildcard in the name position let one tenant re-point another tenant's
//!   consumer at its own subjects. Tenant names never contain `_`, and
//!   names are refused if they do, so no tenant's consumer name can be
//!   another's (with `-` it could: `a` + `b-x` and `a-b` + `x`).
//! - Reading that consumer needs only `CONSUMER.INFO`, `CONSUMER.MSG.NEXT`,
//!   `CONSUMER.DELETE` and acks on `$JS.ACK.{stream}.{consumer}.>`.
//! - Direct get only in the subject-suffix form,
//!   `$JS.API.DIRECT.GET.{stream}.fhir.{tenant}.>`: that form takes no body
//!   (the server answers 408 to one), so no sequence number can reach
//!   another tenant's message.
//! - Replies arrive only on the tenant's own inbox prefix `_INBOX_{tenant}`:
//!   with the shared `_INBOX.>` one tenant could subscribe to the replies
//!   of another's pulls. Clients must set the prefix (async-nats
//!   `custom_inbox_prefix`, nats-py `inbox_prefix`, nats CLI `--inbox-prefix`).
//! - Nothing else: no stream info (its `subjects_filter` lists other
//!   tenants' subjects), no `STREAM.MSG.GET`, no stream creation (a mirror
//!   or source of the stream), no `$JS.API.INFO` (account-wide usage), no
//!   core subscriptions outside the inbox.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use schemas::TenantId;
use schemas::subject::tenant_filter;

use crate::config::NatsAuthArgs;
use crate::startup::connect_nats;

/// Prefix of a tenant's analytics user name.
pub const USER_PREFIX: &str = "analytics-";

/// What one tenant's analytics user may do.
#[derive(Debug, Clone)]
pub struct TenantAccess {
    pub tenant: TenantId,
    /// Consumer names without the tenant prefix, validated by [`consumer_base_name`].
    pub consumers: Vec<String>,
    /// Whether the user may also read the shared space.
    pub shared: bool,
}

impl TenantAccess {
    pub fn user(&self) -> String {
        format!("{USER_PREFIX}{}", self.tenant)
    }

    /// The inbox prefix the tenant's clients must connect with.
    pub fn inbox_prefix(&self) -> String {
        format!("_INBOX_{}", self.tenant)
    }

    /// The consumer names on the stream, `{tenant}_{name}`.
    pub fn consumer_names(&self) -> Vec<String> {
        self.consumers.iter().map(|c| format!("{}_{c}", self.tenant)).collect()
    }

    /// The subject filters this tenant may read.
    pub fn filters(&self) -> Vec<String> {
        let mut filters = vec![tenant_filter(&self.tenant)];
        if self.shared && !self.tenant.is_shared() {
            filters.push(tenant_filter(&TenantId::shared()));
        }
        filters
    }

    /// Subjects the user may publish to on `stream`.
    pub fn publish_allow(&self, stream: &str) -> Vec<String> {
        let mut allow = Vec::new();
        for consumer in self.consumer_names() {
            for filter in self.filters() {
                allow.push(format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}.{filter}"));
            }
            allow.push(format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"));
            allow.push(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"));
            allow.push(format!("$JS.API.CONSUMER.DELETE.{stream}.{consumer}"));
            allow.push(format!("$JS.ACK.{stream}.{consumer}.>"));
        }
        for filter in self.filters() {
            allow.push(format!("$JS.API.DIRECT.GET.{stream}.{filter}"));
        }
        allow
    }

    /// Subjects the user may subscribe to: its inbox only.
    pub fn subscribe_allow(&self) -> Vec<String> {
        vec![format!("{}.>", self.inbox_prefix())]
    }
}

/// Checks a consumer name given without its tenant prefix.
pub fn consumer_base_name(name: &str) -> anyhow::Result<String> {
    let ok = !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    anyhow::ensure!(ok, "consumer name '{name}' must be 1 to 64 characters of a-z, A-Z, 0-9 and '-'");
    Ok(name.to_owned())
}

/// Checks a stream name before it goes into permission subjects, where a
/// `.`, `*` or `>` would change what they allow.
pub fn stream_name(name: &str) -> anyhow::Result<&str> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    anyhow::ensure!(ok, "stream name '{name}' must be letters, digits, '-' and '_' only");
    Ok(name)
}

/// One user of the generated configuration.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    /// A bcrypt hash, never the password.
    pub password_hash: String,
    /// `None`: may do everything (fhirstream itself).
    pub access: Option<TenantAccess>,
}

/// The `authorization { users = [...] }` block for `stream`.
pub fn render(stream: &str, users: &[User]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# nats-server users for fhirstream (stream {stream}), generated by `fhirstream nats-auth`.");
    let _ = writeln!(out, "# Include this file from the server configuration, then reload the server.");
    let _ = writeln!(out, "# A tenant's analytics user can create, read and delete only its own named");
    let _ = writeln!(out, "# consumers with filters inside fhir.{{tenant}}.>, direct-get only those subjects,");
    let _ = writeln!(out, "# and receive only on its own inbox prefix; everything else is refused.");
    let _ = writeln!(out, "# Not stopped: making JetStream reply with the user's own events onto other");
    let _ = writeln!(out, "# subjects (NATS does not check reply subjects); see README, Consuming events.");
    out.push_str("authorization {\n  users = [\n");
    for user in users {
        match &user.access {
            None => {
                let _ = writeln!(out, "    # fhirstream itself: everything.");
                let _ = writeln!(out, "    {{");
                let _ = writeln!(out, "      user: {}", quote(&user.name));
                let _ = writeln!(out, "      password: {}", quote(&user.password_hash));
                let _ = writeln!(
                    out,
                    "      permissions: {{ publish: {{ allow: [\">\"] }}, subscribe: {{ allow: [\">\"] }} }}"
                );
                let _ = writeln!(out, "    }}");
            }
            Some(access) => {
                let _ = writeln!(
                    out,
                    "    # Tenant {}: consumers {}; clients connect with inbox prefix {}.",
                    access.tenant,
                    access.consumer_names().join(", "),
                    access.inbox_prefix()
                );
                let _ = writeln!(out, "    {{");
                let _ = writeln!(out, "      user: {}", quote(&user.name));
                let _ = writeln!(out, "      password: {}", quote(&user.password_hash));
                let _ = writeln!(out, "      permissions: {{");
                let _ = writeln!(out, "        publish: {{ allow: {} }}", list(&access.publish_allow(stream), 8));
                let _ = writeln!(out, "        subscribe: {{ allow: {} }}", list(&access.subscribe_allow(), 8));
                let _ = writeln!(out, "      }}");
                let _ = writeln!(out, "    }}");
            }
        }
    }
    out.push_str("  ]\n}\n");
    out
}

/// A quoted config string. Quoting matters: unquoted, `$JS...` and bcrypt's
/// `$2a$...` would be read as variable references. Every value here comes
/// from a validated alphabet without `"` or `\`.
fn quote(s: &str) -> String {
    format!("\"{s}\"")
}

fn list(items: &[String], indent: usize) -> String {
    let pad = " ".repeat(indent + 2);
    let body: Vec<String> = items.iter().map(|i| format!("{pad}{}", quote(i))).collect();
    format!("[\n{}\n{}]", body.join("\n"), " ".repeat(indent))
}

/// Parses a passwords file: `USER PASSWORD` per line, `#` comments.
pub fn parse_passwords(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next()) else {
            anyhow::bail!("line {}: expected `USER PASSWORD`", n + 1);
        };
        anyhow::ensure!(bcrypt_accepts(password), "line {}: the password of {user} is longer than 72 bytes", n + 1);
        out.insert(user.to_owned(), password.to_owned());
    }
    Ok(out)
}

/// bcrypt ignores everything after 72 bytes; a longer password would be
/// weaker than it looks.
fn bcrypt_accepts(password: &str) -> bool {
    password.len() <= 72
}

/// A new random password: 24 bytes from the OS, hex (192 bits).
pub fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("{e}")).context("read random bytes")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// bcrypt hashes of `passwords`, computed on every core: a cost-11 hash
/// takes ~0.1 s, which adds up over thousands of tenants.
fn hash_all(passwords: &[&str], cost: u32) -> anyhow::Result<Vec<String>> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let chunk = passwords.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = passwords
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|p| bcrypt::hash_with_result(p, cost).map(|h| h.format_for_version(bcrypt::Version::TwoA)))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(passwords.len());
        for handle in handles {
            let part = handle.join().map_err(|_| anyhow::anyhow!("a hashing thread panicked"))?;
            out.extend(part.context("hash a password")?);
        }
        Ok(out)
    })
}

/// `fhirstream nats-auth`: prints the configuration on stdout.
pub async fn run(args: NatsAuthArgs) -> anyhow::Result<()> {
    let stream = stream_name(&args.conn.stream)?.to_owned();
    let consumers: BTreeSet<String> = args.consumers.iter().map(|c| consumer_base_name(c)).collect::<Result<_, _>>()?;
    let tenants = match args.all_tenants {
        true => registry_tenants(&args).await?,
        false => args
            .tenants
            .iter()
            .map(|t| TenantId::parse(t).with_context(|| format!("'{t}' is not a tenant name")))
            .collect::<Result<BTreeSet<_>, _>>()?,
    };
    anyhow::ensure!(!tenants.is_empty(), "no tenants to create users for");

    let mut users: Vec<(String, Option<TenantAccess>)> = Vec::new();
    if !args.no_fhirstream_user {
        let name = &args.fhirstream_user;
        let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        anyhow::ensure!(
            valid && !name.starts_with(USER_PREFIX),
            "--fhirstream-user must be letters, digits, '-' and '_', not starting with '{USER_PREFIX}'"
        );
        users.push((args.fhirstream_user.clone(), None));
    }
    for tenant in tenants {
        let access = TenantAccess { tenant, consumers: consumers.iter().cloned().collect(), shared: args.shared };
        users.push((access.user(), Some(access)));
    }

    let mut known = match &args.passwords {
        Some(path) if path.exists() => parse_passwords(
            &std::fs::read_to_string(path).with_context(|| format!("read the passwords file {}", path.display()))?,
        )
        .with_context(|| format!("parse the passwords file {}", path.display()))?,
        _ => BTreeMap::new(),
    };
    let mut new = Vec::new();
    for (name, _) in &users {
        if !known.contains_key(name) {
            let password = random_password()?;
            new.push((name.clone(), password.clone()));
            known.insert(name.clone(), password);
        }
    }
    let plain: Vec<&str> = users.iter().map(|(name, _)| known[name].as_str()).collect();
    let hashes = hash_all(&plain, args.bcrypt_cost)?;
    let users: Vec<User> = users
        .into_iter()
        .zip(hashes)
        .map(|((name, access), password_hash)| User { name, password_hash, access })
        .collect();

    match &args.passwords {
        Some(path) => append_passwords(path, &new)?,
        None => {
            for (user, password) in &new {
                eprintln!("{user} {password}");
            }
        }
    }
    print!("{}", render(&stream, &users));
    Ok(())
}

/// Every tenant the registry knows (deleted ones are not listed).
async fn registry_tenants(args: &NatsAuthArgs) -> anyhow::Result<BTreeSet<TenantId>> {
    let nats = connect_nats(&args.conn).await?;
    let js = async_nats::jetstream::new(nats);
    let stream = js
        .get_stream(&args.conn.tenant_stream)
        .await
        .with_context(|| format!("open the tenant stream {}", args.conn.tenant_stream))?;
    let all = projector::registry::snapshot(&stream).await.context("read the tenant registry")?;
    Ok(all.into_iter().map(|t| t.id).collect())
}

/// Appends new `USER PASSWORD` lines, creating the file readable by its
/// owner only.
fn append_passwords(path: &Path, new: &[(String, String)]) -> anyhow::Result<()> {
    if new.is_empty() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("open the passwords file {}", path.display()))?;
    let mut text = String::new();
    for (user, password) in new {
        let _ = writeln!(text, "{user} {password}");
    }
    file.write_all(text.as_bytes()).with_context(|| format!("write the passwords file {}", path.display()))?;
    eprintln!("{} new password(s) appended to {}", new.len(), path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(tenant: &str, shared: bool) -> TenantAccess {
        TenantAccess { tenant: TenantId::parse(tenant).unwrap(), consumers: vec!["analytics".into()], shared }
    }

    #[test]
    fn a_tenant_may_publish_only_to_its_own_consumers_and_subjects() {
        let allow = access("acme", false).publish_allow("FHIR");
        assert_eq!(
            allow,
            [
                "$JS.API.CONSUMER.CREATE.FHIR.acme_analytics.fhir.acme.>",
                "$JS.API.CONSUMER.INFO.FHIR.acme_analytics",
                "$JS.API.CONSUMER.MSG.NEXT.FHIR.acme_analytics",
                "$JS.API.CONSUMER.DELETE.FHIR.acme_analytics",
                "$JS.ACK.FHIR.acme_analytics.>",
                "$JS.API.DIRECT.GET.FHIR.fhir.acme.>",
            ]
        );
        assert_eq!(access("acme", false).subscribe_allow(), ["_INBOX_acme.>"]);
    }

    #[test]
    fn the_shared_space_is_added_only_when_asked() {
        let allow = access("acme", true).publish_allow("FHIR");
        assert!(allow.contains(&"$JS.API.CONSUMER.CREATE.FHIR.acme_analytics.fhir.shared.>".to_owned()));
        assert!(allow.contains(&"$JS.API.DIRECT.GET.FHIR.fhir.shared.>".to_owned()));
        assert!(!access("acme", false).publish_allow("FHIR").iter().any(|s| s.contains("shared")));
    }

    #[test]
    fn consumer_names_of_different_tenants_never_collide() {
        let a = TenantAccess { tenant: TenantId::parse("a").unwrap(), consumers: vec!["b-x".into()], shared: false };
        let ab = TenantAccess { tenant: TenantId::parse("a-b").unwrap(), consumers: vec!["x".into()], shared: false };
        assert_ne!(a.consumer_names(), ab.consumer_names());
        assert!(consumer_base_name("x_y").is_err(), "a '_' would make names ambiguous");
        for bad in ["", "a.b", "a*", ">", "a b", &"x".repeat(65)] {
            assert!(consumer_base_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stream_names_that_would_widen_a_permission_are_refused() {
        assert!(stream_name("FHIR").is_ok());
        for bad in ["", "F.H", "F*", "F>", "F H"] {
            assert!(stream_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_password_file_is_user_and_password_per_line() {
        let parsed = parse_passwords("# comment\n\nfhirstream s3cret\n  analytics-a  pw  \n").unwrap();
        assert_eq!(parsed["fhirstream"], "s3cret");
        assert_eq!(parsed["analytics-a"], "pw");
        assert!(parse_passwords("only-a-user\n").unwrap_err().to_string().contains("line 1"));
        assert!(parse_passwords("u p extra\n").is_err());
        assert!(parse_passwords(&format!("u {}\n", "x".repeat(73))).is_err());
    }

    #[test]
    fn the_rendered_config_quotes_every_subject_and_hides_passwords() {
        let users = vec![
            User { name: "fhirstream".into(), password_hash: "$2a$04$hash".into(), access: None },
            User {
                name: "analytics-acme".into(),
                password_hash: "$2a$04$other".into(),
                access: Some(access("acme", false)),
            },
        ];
        let text = render("FHIR", &users);
        assert!(text.contains("\"$JS.API.CONSUMER.MSG.NEXT.FHIR.acme_analytics\""));
        assert!(text.contains("password: \"$2a$04$hash\""));
        assert!(text.contains("subscribe: { allow: [\n          \"_INBOX_acme.>\"\n        ] }"));
        assert!(!text.lines().any(|l| l.trim_start().starts_with("$")), "no unquoted $ value:\n{text}");
    }

    #[test]
    fn random_passwords_are_long_and_different() {
        let (a, b) = (random_password().unwrap(), random_password().unwrap());
        assert_eq!(a.len(), 48);
        assert_ne!(a, b);
    }
}
