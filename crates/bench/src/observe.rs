//! `certkeeper-observe-bench`: what observing costs.
//!
//! - `metrics`: `GET /metrics` render time and size with 0 and 100,000 managed certificates
//!   (each with a certificate in force, in the inventory), beside `GET /healthz` on the same
//!   listener in the same run. Rows are written straight into the server's SQLite database
//!   (the reconciler is off: nothing is issued), so only the scrape is measured.
//! - `scan`: `certkeeper scan` against N TLS endpoints served by nginx on loopback, in
//!   endpoints per second, beside `openssl s_client` run over the same endpoints with the same
//!   concurrency.
//!
//! Usage: certkeeper-observe-bench metrics|scan --certkeeper target/release/certkeeper

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[allow(dead_code)] // each benchmark binary uses part of it
mod server;

use server::{Killed, Server, start_server};

#[derive(Parser)]
struct Args {
    /// The certkeeper binary (a release build).
    #[arg(long, default_value = "target/release/certkeeper", global = true)]
    certkeeper: PathBuf,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// /metrics render time and size at 0 and N managed certificates.
    Metrics {
        /// Managed certificates.
        #[arg(long, default_value_t = 100_000)]
        managed: i64,
        /// Scrapes per measurement.
        #[arg(long, default_value_t = 100)]
        scrapes: usize,
        /// Run the server on this PostgreSQL database instead of SQLite (an empty scratch
        /// database: the bench fills it).
        #[arg(long)]
        postgres: Option<String>,
    },
    /// Scan rate on loopback.
    Scan {
        /// Endpoints (nginx server blocks).
        #[arg(long, default_value_t = 500)]
        endpoints: usize,
        /// Probes at once, for both certkeeper and openssl.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
}

/// A server with nothing running in the background (no reconciler, no alerting).
fn start_quiet_server(
    binary: &Path,
    dir: &Path,
    database_url: Option<&str>,
) -> Result<Server, String> {
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        "[lifecycle]\nenabled = false\n[alerting]\nenabled = false\n",
    )
    .map_err(|e| e.to_string())?;
    let config = config.to_string_lossy().into_owned();
    let mut extra = vec!["--config", config.as_str()];
    if let Some(url) = database_url {
        extra.extend(["--database-url", url]);
    }
    start_server(binary, dir, &extra)
}

/// Fills the inventory and the managed certificates: `count` of each (a 700-byte DER per
/// certificate, as for an ECDSA leaf), notAfter spread over 90 days, one in fifty failing.
async fn populate(database: &Path, count: i64) -> Result<(), String> {
    let url = format!("sqlite://{}", database.display());
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .map_err(|e| e.to_string())?;
    let now = time_now();
    for sql in SQLITE_FILL {
        sqlx::query(sql)
            .bind(count)
            .bind(now)
            .execute(&pool)
            .await
            .map_err(|e| format!("populate: {e}"))?;
    }
    pool.close().await;
    Ok(())
}

/// The same rows on PostgreSQL, then VACUUM ANALYZE (what autovacuum soon does: statistics,
/// and the visibility map that lets counts read the indexes alone).
async fn populate_postgres(url: &str, count: i64) -> Result<(), String> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let now = time_now();
    for sql in [
        "INSERT INTO certificates (serial, issuer, subject, common_name, sans, san_search, not_before, not_after, \
           key_algorithm, spki_sha256, fingerprint_sha256, profile, tenant, requester, source, status, labels, der, created_at, crl_shard) \
         SELECT lpad(to_hex(i), 32, '0'), 'CN=bench', '', NULL, '[\"DNS:svc' || i || '.example.com\"]', 'svc' || i || '.example.com', \
           $2 - 86400, $2 + (i * 7919) % (90 * 86400), 'ecdsa-p256', lpad(to_hex(i), 64, '0'), lpad(to_hex(i), 64, '0'), 'tls-server', \
           'default', 'bench', 'issued', 'active', '{}', decode(repeat('ab', 700), 'hex'), $2, 0 FROM generate_series(1, $1) AS i",
        "INSERT INTO managed_certificates (name, tenant, spec, state, current_serial, not_after, next_action_at, \
           next_action_reason, consecutive_failures, targets, created_at, updated_at) \
         SELECT 'managed-' || lpad(i::text, 6, '0'), 'default', '{\"name\":\"managed\",\"sans\":[\"svc.example.com\"]}', \
           CASE WHEN i % 50 = 0 THEN 'failing' ELSE 'ready' END, lpad(to_hex(i), 32, '0'), $2 + (i * 7919) % (90 * 86400), \
           $2 + 86400, 'lifetime_fraction', CASE WHEN i % 50 = 0 THEN 1 ELSE 0 END, '[]', $2, $2 FROM generate_series(1, $1) AS i",
    ] {
        sqlx::query(sql)
            .bind(count)
            .bind(now)
            .execute(&pool)
            .await
            .map_err(|e| format!("populate: {e}"))?;
    }
    sqlx::query("VACUUM ANALYZE")
        .execute(&pool)
        .await
        .map_err(|e| e.to_string())?;
    pool.close().await;
    Ok(())
}

const SQLITE_FILL: [&str; 2] = [
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO certificates (serial, issuer, subject, common_name, sans, san_search, not_before, not_after, \
           key_algorithm, spki_sha256, fingerprint_sha256, profile, tenant, requester, source, status, labels, der, created_at, crl_shard) \
         SELECT printf('%032x', i), 'CN=bench', '', NULL, '[\"DNS:svc' || i || '.example.com\"]', 'svc' || i || '.example.com', \
           $2 - 86400, $2 + (i * 7919) % (90 * 86400), 'ecdsa-p256', printf('%064x', i), printf('%064x', i), 'tls-server', \
           'default', 'bench', 'issued', 'active', '{}', randomblob(700), $2, 0 FROM n",
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
         INSERT INTO managed_certificates (name, tenant, spec, state, current_serial, not_after, next_action_at, \
           next_action_reason, consecutive_failures, targets, created_at, updated_at) \
         SELECT printf('managed-%06d', i), 'default', '{\"name\":\"managed\",\"sans\":[\"svc.example.com\"]}', \
           CASE WHEN i % 50 = 0 THEN 'failing' ELSE 'ready' END, printf('%032x', i), $2 + (i * 7919) % (90 * 86400), \
           $2 + 86400, 'lifetime_fraction', CASE WHEN i % 50 = 0 THEN 1 ELSE 0 END, '[]', $2, $2 FROM n",
];

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn percentile(samples: &mut [f64], p: usize) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

/// (p50 ms, p99 ms, bytes, samples) of `scrapes` GETs of `path`.
async fn time_gets(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    scrapes: usize,
) -> Result<(f64, f64, usize, usize), String> {
    let mut times = Vec::new();
    let mut size = 0;
    let mut series = 0;
    for _ in 0..scrapes {
        let started = Instant::now();
        let body = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        size = body.len();
        series = body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
    }
    Ok((
        percentile(&mut times, 50),
        percentile(&mut times, 99),
        size,
        series,
    ))
}

async fn metrics(
    binary: &Path,
    managed: i64,
    scrapes: usize,
    postgres: Option<&str>,
) -> Result<(), String> {
    let dir = tempfile_dir("metrics")?;
    let server = start_quiet_server(binary, &dir, postgres)?;
    let (https, token) = (server.https.clone(), server.token.clone());
    let root = std::fs::read(&server.root).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&root).map_err(|e| e.to_string())?])
        .build()
        .map_err(|e| e.to_string())?;
    for (label, count) in [("empty", 0), ("loaded", managed)] {
        if count > 0 {
            let started = Instant::now();
            match postgres {
                Some(url) => populate_postgres(url, count).await?,
                None => populate(&dir.join("data/certkeeper.db"), count).await?,
            }
            eprintln!("populated {count} rows of each in {:?}", started.elapsed());
        }
        // Warm up, then measure.
        time_gets(&client, &format!("{https}/metrics"), &token, 3).await?;
        let (p50, p99, bytes, series) =
            time_gets(&client, &format!("{https}/metrics"), &token, scrapes).await?;
        let (h50, h99, _, _) =
            time_gets(&client, &format!("{https}/healthz"), &token, scrapes).await?;
        println!(
            "{}",
            serde_json::json!({
                "backend": if postgres.is_some() { "postgres" } else { "sqlite" },
                "database": label, "managed_certificates": count, "inventory_certificates": count,
                "metrics_ms_p50": p50, "metrics_ms_p99": p99, "metrics_bytes": bytes,
                "metrics_series": series, "healthz_ms_p50": h50, "healthz_ms_p99": h99,
                "goal_ms": 50,
            })
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir(tag: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "certkeeper-observe-bench-{tag}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

async fn scan(binary: &Path, endpoints: usize, concurrency: usize) -> Result<(), String> {
    let dir = tempfile_dir("scan")?;
    // One certificate for `localhost`, trusted directly, served on every port.
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| e.to_string())?;
    std::fs::write(dir.join("cert.pem"), cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).map_err(|e| e.to_string())?;
    // Distinct free ports (the listeners are held open until all are picked).
    let listeners: Vec<std::net::TcpListener> = (0..endpoints)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    drop(listeners);
    let w = dir.display();
    let mut servers = String::new();
    for port in &ports {
        servers.push_str(&format!(
            "  server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {w}/cert.pem; ssl_certificate_key {w}/key.pem; }}\n"
        ));
    }
    std::fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 1;\nworker_rlimit_nofile 8192;\nerror_log {w}/error.log;\npid {w}/nginx.pid;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {w}/tmp;\n{servers}}}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nginx");
    let _nginx = Killed(
        Command::new(nginx)
            .args([
                "-p",
                &w.to_string(),
                "-c",
                &format!("{w}/nginx.conf"),
                "-g",
                "daemon off;",
            ])
            .spawn()
            .map_err(|e| format!("nginx: {e}"))?,
    );
    let last = ports[ports.len() - 1];
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", last)).is_err() {
        if Instant::now() > deadline {
            return Err("nginx did not start".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let targets: String = ports.iter().map(|p| format!("localhost:{p}\n")).collect();
    std::fs::write(dir.join("targets.txt"), targets).map_err(|e| e.to_string())?;

    let mut rounds = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let out = Command::new(binary)
            .args([
                "scan",
                "--no-record",
                "-o",
                "json",
                "--concurrency",
                &concurrency.to_string(),
            ])
            .arg("--trust")
            .arg(dir.join("cert.pem"))
            .arg("--file")
            .arg(dir.join("targets.txt"))
            .output()
            .map_err(|e| e.to_string())?;
        let elapsed = started.elapsed().as_secs_f64();
        let reports: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("scan output: {e}"))?;
        let valid = reports.iter().filter(|r| r["valid"] == true).count();
        if valid != endpoints {
            let first = reports.iter().find(|r| r["valid"] != true);
            return Err(format!(
                "{valid} of {endpoints} endpoints valid; first problem: {first:?}"
            ));
        }
        rounds.push(endpoints as f64 / elapsed);
    }
    // The peer: openssl s_client per endpoint, `concurrency` at once.
    let started = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "xargs -P {concurrency} -I{{}} sh -c 'openssl s_client -connect {{}} -servername localhost </dev/null >/dev/null 2>&1' < {w}/targets.txt"
        ))
        .status()
        .map_err(|e| e.to_string())?;
    let openssl_rate = endpoints as f64 / started.elapsed().as_secs_f64();
    if !status.success() {
        return Err("openssl s_client failed".into());
    }
    println!(
        "{}",
        serde_json::json!({
            "endpoints": endpoints, "concurrency": concurrency,
            "certkeeper_scan_endpoints_per_s_median": percentile(&mut rounds, 50),
            "certkeeper_scan_rounds": rounds,
            "openssl_s_client_endpoints_per_s": openssl_rate,
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = Args::parse();
    let result = match args.what {
        What::Metrics {
            managed,
            scrapes,
            postgres,
        } => metrics(&args.certkeeper, managed, scrapes, postgres.as_deref()).await,
        What::Scan {
            endpoints,
            concurrency,
        } => scan(&args.certkeeper, endpoints, concurrency).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
