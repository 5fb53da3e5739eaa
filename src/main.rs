//! The `fhirstream` command.

use clap::Parser as _;

use fhirstream::config::{Cli, Command};
use fhirstream::{cli, startup, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Cli::parse();
    telemetry::init(&args.log);
    match args.command {
        Command::Serve(cfg) => {
            let app = startup::App::build(*cfg).await?;
            app.run_until_stopped(cli::shutdown_signal()).await
        }
        Command::Tenants(t) => cli::tenants(t).await,
        Command::Token(t) => cli::token(t),
        Command::Import(args) => fhirstream::import::run(args).await,
        Command::NatsAuth(args) => fhirstream::natsauth::run(args).await,
    }
}
