//! Sends certificate requests to certkeeper or cfssl at a fixed concurrency and reports
//! throughput and latency. Used by `scripts/bench`; the same generator drives both servers.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Target {
    /// certkeeper: POST /api/v1/certificates over HTTPS with a token.
    Certkeeper,
    /// cfssl serve: POST /api/v1/cfssl/sign.
    Cfssl,
    /// Any OCSP responder: POST the DER request in --ocsp-request to --url as is.
    Ocsp,
}

/// Load generator for issuance benchmarks.
#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum)]
    target: Target,
    /// Base URL, such as https://127.0.0.1:8443.
    #[arg(long)]
    url: String,
    /// API token (certkeeper).
    #[arg(long, env = "CERTKEEPER_TOKEN")]
    token: Option<String>,
    /// CA certificate to trust (HTTPS).
    #[arg(long)]
    ca_file: Option<String>,
    /// Requests in flight.
    #[arg(long)]
    concurrency: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Unmeasured warm-up seconds.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Distinct CSRs to cycle through.
    #[arg(long, default_value_t = 2000)]
    csrs: usize,
    /// DER OCSP request to send (target ocsp).
    #[arg(long)]
    ocsp_request: Option<String>,
}

fn make_csrs(count: usize) -> Result<Vec<String>, String> {
    (0..count)
        .map(|i| {
            let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
            let name = format!("host-{i}.example.com");
            let mut params =
                rcgen::CertificateParams::new(vec![name.clone()]).map_err(|e| e.to_string())?;
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params
                .serialize_request(&key)
                .and_then(|csr| csr.pem())
                .map_err(|e| e.to_string())
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let csrs = Arc::new(match args.target {
        Target::Ocsp => Vec::new(),
        _ => make_csrs(args.csrs)?,
    });
    let ocsp_body: Arc<Vec<u8>> = Arc::new(match (&args.target, &args.ocsp_request) {
        (Target::Ocsp, Some(path)) => std::fs::read(path).map_err(|e| format!("{path}: {e}"))?,
        (Target::Ocsp, None) => return Err("--ocsp-request is required for target ocsp".into()),
        _ => Vec::new(),
    });
    let mut builder = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency);
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
        builder = builder.tls_certs_only([cert]);
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let (path, expected) = match args.target {
        Target::Certkeeper => ("/api/v1/certificates", 201),
        Target::Cfssl => ("/api/v1/cfssl/sign", 200),
        Target::Ocsp => ("", 200),
    };
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let (client, url, csrs, measuring, stop, token, ocsp_body) = (
            client.clone(),
            url.clone(),
            csrs.clone(),
            measuring.clone(),
            stop.clone(),
            args.token.clone(),
            ocsp_body.clone(),
        );
        let target = args.target;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let mut request = match target {
                    Target::Ocsp => client
                        .post(&url)
                        .header("content-type", "application/ocsp-request")
                        .body(ocsp_body.as_ref().clone()),
                    Target::Certkeeper => {
                        let csr = &csrs[i % csrs.len()];
                        client
                            .post(&url)
                            .json(&serde_json::json!({"profile": "tls-server", "csr": csr}))
                    }
                    Target::Cfssl => {
                        let csr = &csrs[i % csrs.len()];
                        client
                            .post(&url)
                            .json(&serde_json::json!({"certificate_request": csr}))
                    }
                };
                i += 7;
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let started = Instant::now();
                let ok = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        // Read the whole body: the certificate is only "received" when it is.
                        response.bytes().await.is_ok() && status == expected
                    }
                    Err(_) => false,
                };
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        latencies.push(started.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker.await.map_err(|e| e.to_string())?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    println!(
        "{}",
        serde_json::json!({
            "target": format!("{:?}", args.target).to_lowercase(),
            "concurrency": args.concurrency,
            "completed": latencies.len(),
            "errors": errors,
            "per_second": latencies.len() as f64 / elapsed,
            "p50_ms": percentile(&latencies, 0.50),
            "p99_ms": percentile(&latencies, 0.99),
        })
    );
    Ok(())
}
