//! The `fhirstream` command.

use std::process::ExitCode;

use fhirstream::config::Command;
use fhirstream::{cli, startup, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let args = fhirstream::config_file::parse_or_exit();
    telemetry::init(&args.log);
    let result = match args.command {
        Command::Serve(cfg) => match startup::App::build(*cfg).await {
            Ok(app) => app.run_until_stopped(cli::shutdown_signal()).await,
            Err(e) => Err(e),
        },
        Command::Config(c) => {
            print!("{}", c.effective);
            Ok(())
        }
        Command::Tenants(t) => cli::tenants(t).await,
        Command::Token(t) => cli::token(t),
        Command::Import(args) => fhirstream::import::run(args).await,
        Command::NatsAuth(args) => fhirstream::natsauth::run(args).await,
        Command::Replay(args) => fhirstream::replay::run_replay(args).await,
        Command::Export(args) => fhirstream::export::cli::run(args).await,
        // 1 is the answer "they differ", so failing to verify must be another code.
        Command::Verify(args) => {
            return match fhirstream::replay::run_verify(args).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("Error: {e:?}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The same report as returning the error from main would print.
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}
