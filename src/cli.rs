//! Operator commands that act on the stream directly, without a server.

use anyhow::Context as _;

use command::tenants;
use projector::registry;
use schemas::{Actor, TenantConfig, TenantId};

use crate::config::{TenantAction, TenantsArgs, TokenArgs};
use crate::http::auth::{TokenClaims, mint_hs256};
use crate::startup::{connect_nats, open_store};

/// `fhirstream tenants ...`
pub async fn tenants(args: TenantsArgs) -> anyhow::Result<()> {
    let nats = connect_nats(&args.conn).await?;
    let store = open_store(&args.conn, nats).await?;
    match args.action {
        TenantAction::Create { id, name } => {
            let tenant = TenantId::parse_new(&id).with_context(|| format!("'{id}' cannot be a tenant name"))?;
            let name = name.unwrap_or_else(|| id.clone());
            let actor = Actor { sub: "cli".into(), client: Some("fhirstream tenants".into()) };
            let written = tenants::create(&store, tenant, name, TenantConfig::default(), actor)
                .await
                .context("create the tenant")?;
            println!(
                "created tenant {} (event {} at sequence {})",
                written.event.tenant, written.event.event_id, written.seq
            );
        }
        TenantAction::List => {
            let all = registry::snapshot(store.tenant_stream()).await?;
            for t in &all {
                println!("{}\t{}", t.id, t.name);
            }
            if all.is_empty() {
                eprintln!("no tenants");
            }
        }
    }
    Ok(())
}

/// `fhirstream token`: prints a signed development token.
pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    let tenants: Vec<&str> = args.tenants.iter().map(String::as_str).collect();
    let claims = TokenClaims::new(&args.sub, &tenants, &args.scope, std::time::Duration::from_secs(args.expires_in));
    println!("{}", mint_hs256(&args.jwt_secret, &claims)?);
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown requested");
}
