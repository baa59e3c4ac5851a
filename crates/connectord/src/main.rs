use clap::Parser;
use connectord::cli::{self, Cli, Command};
use connectord::startup::Application;
use connectord::telemetry;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connectord: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let args = *args;
            telemetry::init_logging(args.log_json);
            let edge = args.edge.settings();
            let recovery = args.recovery.settings();
            let app = Application::build(args.into_settings()?, None)
                .await?
                .with_edge(edge)
                .with_recovery(recovery);
            let token = app.shutdown_token();
            tokio::spawn(async move {
                connectord::shutdown::signal().await;
                tracing::info!("shutting down: finishing in-flight requests and jobs");
                token.cancel();
            });
            app.run_until_stopped().await
        }
        Command::Migrate(store) => {
            telemetry::init_logging(false);
            let url = store.database_url();
            connectord::startup::open_store(&url, Default::default()).await?;
            eprintln!(
                "connectord: migrations applied to {}",
                connectord::startup::redact_url(&url)
            );
            Ok(())
        }
        Command::Doctor(args) => connectord::recovery::doctor::run(*args).await,
        Command::Deliver(args) => cli::deliver(args).await,
        admin => cli::run_admin(admin).await,
    }
}
