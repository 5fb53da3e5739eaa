//! Operator commands that act on the stream directly, without a server.

use anyhow::Context as _;

use command::{AppliedWatch, tenants};
use projector::registry;
use projector::tenants::tenant_projection_name;
use schemas::{Actor, TenantConfig, TenantId};

use crate::config::{TenantAction, TenantsArgs, TokenArgs};
use crate::http::auth::{TokenClaims, mint_hs256};
use crate::startup::{connect_nats, connect_pg, open_store};
use crate::tenancy;

/// `fhirstream tenants ...`: the admin API's operations, straight on the
/// stream (and, for creation and deletion, the read models).
pub async fn tenants(args: TenantsArgs) -> anyhow::Result<()> {
    let nats = connect_nats(&args.conn).await?;
    let store = open_store(&args.conn, nats.clone()).await?;
    let actor = Actor { sub: "cli".into(), client: Some("fhirstream tenants".into()) };
    let existing = |id: &str| TenantId::parse(id).with_context(|| format!("'{id}' is not a tenant name"));
    match args.action {
        TenantAction::Create { id, name } => {
            let tenant = TenantId::parse_new(&id).with_context(|| format!("'{id}' cannot be a tenant name"))?;
            let pool = connect_pg(&args.conn, 2).await?;
            let name = name.unwrap_or_else(|| id.clone());
            let written = tenancy::create(&store, Some(&pool), tenant, name, TenantConfig::default(), actor)
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
        TenantAction::Show { id } => {
            let tenant = existing(&id)?;
            let state = projector::TenantRegistry::follow(store.jetstream(), &args.conn.tenant_stream)
                .await?
                .get(&tenant)
                .await?
                .with_context(|| format!("tenant '{tenant}' does not exist"))?;
            println!("{}", serde_json::to_string_pretty(&state)?);
        }
        TenantAction::Configure { id, name, config } => {
            let tenant = existing(&id)?;
            let config: TenantConfig =
                serde_json::from_str(&config).context("--config is not a tenant configuration")?;
            config.validate().map_err(anyhow::Error::msg).context("--config is not valid")?;
            let written =
                tenants::configure(&store, tenant, name, config, actor).await.context("configure the tenant")?;
            println!("configured tenant {} (sequence {})", written.event.tenant, written.seq);
        }
        TenantAction::Delete { id } => {
            let tenant = existing(&id)?;
            let pool = connect_pg(&args.conn, 2).await?;
            let applied = AppliedWatch::follow(&nats, &tenant_projection_name(&args.projector_name)).await?;
            let (deletion, _) =
                tenancy::delete(&store, &pool, &applied, tenant, actor).await.context("delete the tenant")?;
            println!("{}", serde_json::to_string_pretty(&deletion)?);
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
