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
    // Dev mode without API keys: one ephemeral key, printed, so the README's curl lines work.
    let dev_api_key = (dev && settings.api_keys.is_empty()).then(keys::ephemeral_secret);
    if let Some(key) = &dev_api_key {
        settings.api_keys = vec![key.clone()];
    }
    let keys = keys::load(&settings.jwt)?;
    let issuer = keys.issuer.map(std::sync::Arc::new);
    let dev_tokens =
        dev.then(|| issuer.clone())
            .flatten()
            .map(|issuer| crate::http::dev::DevTokens {
                issuer,
                jwt_issuer: settings.jwt.jwt_issuer.clone(),
                jwt_audience: settings.jwt.jwt_audience.clone(),
            });
    let app = Application::build_with_dev(settings.clone(), keys.verifier, dev_tokens).await?;
    // After `build` (metrics installed); the node listens meanwhile, and reports not ready on
    // `/readyz` until the first fetch succeeds.
    if let Some(jwks) = &keys.jwks {
        jwks.spawn_refresher();
    }
    let addr = app.local_addr()?;
    // A stable line on stdout: scripts and tests read the bound port from it.
    println!("aegisx-realtime listening on {addr}");
    if dev {
        print_dev_banner(&settings, generated, issuer.as_deref(), addr.port())?;
        print_dev_extras(
            &settings,
            dev_api_key.as_ref(),
            issuer.is_some(),
            addr.port(),
        );
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

/// The development API key and the demo's address, after the banner.
fn print_dev_extras(
    settings: &Settings,
    api_key: Option<&secrecy::SecretString>,
    can_mint: bool,
    port: u16,
) {
    use secrecy::ExposeSecret;
    if let Some(key) = api_key {
        println!(
            "Development API key (valid until this process exits); the README's curl examples start with:\n  H='Authorization: Bearer {}'; B=http://localhost:{port}/api/v1\n",
            key.expose_secret()
        );
    }
    if !can_mint {
        println!(
            "The demo's sign-in (POST /dev/token) is off: JWT_PUBLIC_KEY_FILE only verifies (set JWT_PRIVATE_KEY_FILE).\n"
        );
    } else if settings.web_dir.join("index.html").is_file() {
        println!("Web demo: http://localhost:{port}/ (log in as any name, tenant \"demo\")\n");
    } else {
        println!(
            "Web demo not built ({} has no index.html): cd web && npm ci && npm run build\n",
            settings.web_dir.display()
        );
    }
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
