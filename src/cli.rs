//! The command line: `serve`, `token`, `check-config`. Thin: parse → settings → run.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::app::Application;
use crate::domain::auth::TokenSpec;
use crate::keys;
use crate::settings::{JwtSettings, Settings};

#[derive(Parser)]
#[command(
    name = "aegisx-realtime",
    version,
    about = "Socket.IO real-time gateway: chat, notifications, presence, server push"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Newcomer mode: without a configured key, generate an ephemeral one and print it, two
        /// sample tokens and a client snippet.
        #[arg(long)]
        dev: bool,
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Mint a JWT with the configured key.
    Token(Box<TokenArgs>),
    /// Validate the settings and key material, print them (secrets redacted), and exit.
    CheckConfig {
        #[command(flatten)]
        settings: Box<Settings>,
    },
}

#[derive(Args)]
pub struct TokenArgs {
    /// User id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Tenant id (`tenantId`).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub email: Option<String>,
    /// Roles, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Private rooms the user may join, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub rooms: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: i64,
    /// Key id written to the token header (default: the first of JWT_KEY_IDS).
    #[arg(long)]
    pub kid: Option<String>,
    #[command(flatten)]
    pub jwt: JwtSettings,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { dev, settings } => serve(*settings, dev).await,
        Command::Token(args) => {
            let args = *args;
            let keys = keys::load(&args.jwt)?;
            let mut issuer = keys.issuer.context(
                "public keys only verify: set JWT_PRIVATE_KEY_FILE to mint RS256/ES256/EdDSA tokens",
            )?;
            if args.kid.is_some() {
                issuer = issuer.with_kid(args.kid.clone());
            }
            let token = issuer.mint(&TokenSpec {
                sub: args.sub,
                tenant: args.tenant,
                name: args.name,
                email: args.email,
                roles: args.roles,
                rooms: args.rooms,
                ttl_secs: args.ttl,
                issuer: args.jwt.jwt_issuer.clone(),
                audience: args.jwt.jwt_audience.clone(),
            })?;
            println!("{token}");
            Ok(())
        }
        Command::CheckConfig { settings } => {
            settings.validate()?;
            let keys = keys::load(&settings.jwt)?;
            crate::http::AllowedOrigins::parse(&settings.cors_origin)?;
            let mode = match &keys.mode {
                keys::KeyMode::Secrets { count } => format!("{count} shared secret(s)"),
                keys::KeyMode::PublicKeys { count } => format!("{count} public key(s) from PEM"),
                keys::KeyMode::Jwks { url } => format!("JWKS from {url}"),
            };
            if let Some(jwks) = &keys.jwks {
                let n = jwks
                    .refresh_once()
                    .await
                    .map_err(|e| anyhow::anyhow!("JWT_JWKS_URL: {e}"))?;
                println!("JWKS: {n} usable key(s), kids: {:?}", jwks.kids());
            }
            println!("configuration OK (JWT {:?}, {mode})", keys.algorithm);
            println!("{settings:#?}");
            Ok(())
        }
    }
}

async fn serve(mut settings: Settings, dev: bool) -> anyhow::Result<()> {
    crate::telemetry::init(settings.log_format, &settings.log_level);
    let generated = dev
        && settings.jwt.jwt_secret.is_none()
        && settings.jwt.jwt_public_key_file.is_none()
        && settings.jwt.jwt_jwks_url.is_none();
    if generated {
        settings.jwt.jwt_secret = Some(keys::ephemeral_secret());
    }
    let keys = keys::load(&settings.jwt)?;
    let issuer = keys.issuer;
    let app = Application::build(settings.clone(), keys.verifier).await?;
    // After `build` (metrics installed); the node listens meanwhile, and reports not ready on
    // `/readyz` until the first fetch succeeds.
    if let Some(jwks) = &keys.jwks {
        jwks.spawn_refresher();
    }
    let addr = app.local_addr()?;
    // A stable line on stdout: scripts and tests read the bound port from it.
    println!("aegisx-realtime listening on {addr}");
    if dev {
        print_dev_banner(&settings, generated, issuer.as_ref(), addr.port())?;
    }
    app.run_until(shutdown_signal()).await
}

fn print_dev_banner(
    settings: &Settings,
    generated: bool,
    issuer: Option<&crate::domain::auth::TokenIssuer>,
    port: u16,
) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    if generated && let Some(secret) = &settings.jwt.jwt_secret {
        println!(
            "\nDevelopment mode: ephemeral JWT_SECRET (valid until this process exits):\n  {}",
            secret.expose_secret()
        );
    }
    let Some(issuer) = issuer else { return Ok(()) };
    let mint = |sub: &str, name: &str| {
        issuer.mint(&TokenSpec {
            sub: sub.into(),
            tenant: Some("demo".into()),
            name: Some(name.into()),
            ttl_secs: 24 * 3600,
            issuer: settings.jwt.jwt_issuer.clone(),
            audience: settings.jwt.jwt_audience.clone(),
            ..Default::default()
        })
    };
    let alice = mint("alice", "Alice")?;
    let bob = mint("bob", "Bob")?;
    println!("\nSample tokens (tenant \"demo\", 24 h):\n  alice: {alice}\n  bob:   {bob}");
    println!(
        "\nConnect with socket.io-client:\n  const socket = require(\"socket.io-client\").io(\"http://localhost:{port}/ws\", {{ auth: {{ token: \"{alice}\" }} }});\n  socket.on(\"connected\", (d) => console.log(\"connected\", d));\n  socket.emit(\"join_room\", {{ roomId: \"general\" }}, () => socket.emit(\"message\", {{ type: \"send_message\", data: {{ roomId: \"general\", message: \"hi\" }} }}));\n"
    );
    Ok(())
}

async fn shutdown_signal() {
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
        _ = ctrl_c => {},
        _ = term => {},
    }
}
