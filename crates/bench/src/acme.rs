//! ACME load generator: complete orders (new account, new order, http-01 validation against
//! this process's own responder, finalize with a fresh key, download) through instant-acme,
//! at a fixed concurrency for a fixed time. Prints one JSON line.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use clap::Parser;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, BodyWrapper, BytesResponse, ChallengeType, HttpClient, Identifier, NewAccount,
    NewOrder, OrderStatus,
};

#[derive(Parser)]
struct Args {
    /// The ACME directory URL.
    #[arg(long)]
    directory: String,
    /// Root CA certificate (PEM) the server's TLS certificate chains to.
    #[arg(long)]
    root: std::path::PathBuf,
    /// Where this process answers http-01 challenges (the server's acme.http01_port).
    #[arg(long)]
    http01_listen: SocketAddr,
    /// Names are `<n>-<run>.<domain>`; the server's resolver must answer for them.
    #[arg(long, default_value = "bench.example.com")]
    domain: String,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 2)]
    warmup: u64,
}

/// One HTTPS client (connection pool) for every account of this process.
#[derive(Clone)]
struct SharedClient(
    HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<bytes_type::Bytes>>,
);

mod bytes_type {
    pub use axum::body::Bytes;
}

impl HttpClient for SharedClient {
    fn request(
        &self,
        request: axum::http::Request<BodyWrapper<bytes_type::Bytes>>,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>>
    {
        let future = self.0.request(request);
        Box::pin(async move {
            future
                .await
                .map(BytesResponse::from)
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))
        })
    }
}

type Tokens = Arc<Mutex<HashMap<String, String>>>;

async fn answer(
    State(tokens): State<Tokens>,
    Path(token): Path<String>,
) -> (axum::http::StatusCode, String) {
    let found = tokens
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&token)
        .cloned();
    match found {
        Some(key_authorization) => (axum::http::StatusCode::OK, key_authorization),
        None => (axum::http::StatusCode::NOT_FOUND, String::new()),
    }
}

async fn full_order(
    client: &SharedClient,
    directory: &str,
    name: String,
    tokens: &Tokens,
) -> Result<(), String> {
    let t0 = Instant::now();
    let trace = std::env::var_os("ACME_LOADGEN_TRACE").is_some();
    let step = |what: &str| {
        if trace {
            eprintln!("{what}: {:?}", t0.elapsed());
        }
    };
    let (account, _) = Account::builder_with_http(Box::new(client.clone()))
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.to_string(),
            None,
        )
        .await
        .map_err(|e| format!("newAccount: {e}"))?;
    step("account");
    let identifiers = [Identifier::Dns(name.clone())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| format!("newOrder: {e}"))?;
    step("order");
    let mut issued_tokens = Vec::new();
    {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(|e| format!("authz: {e}"))?;
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .ok_or("no http-01 challenge")?;
            tokens
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(
                    challenge.token.clone(),
                    challenge.key_authorization().as_str().to_string(),
                );
            issued_tokens.push(challenge.token.clone());
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("challenge: {e}"))?;
        }
    }
    step("challenges");
    // The server answers the challenge once validated; poll without sleeping first.
    let mut status = order
        .refresh()
        .await
        .map_err(|e| format!("order: {e}"))?
        .status;
    while status == OrderStatus::Pending {
        tokio::time::sleep(Duration::from_millis(10)).await;
        status = order
            .refresh()
            .await
            .map_err(|e| format!("order: {e}"))?
            .status;
    }
    if status != OrderStatus::Ready {
        return Err(format!("order became {status:?}"));
    }
    step("ready");
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(vec![name]).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| format!("finalize: {e}"))?;
    let mut certificate = order
        .certificate()
        .await
        .map_err(|e| format!("certificate: {e}"))?;
    while certificate.is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
        order.refresh().await.map_err(|e| format!("order: {e}"))?;
        certificate = order
            .certificate()
            .await
            .map_err(|e| format!("certificate: {e}"))?;
    }
    step("certificate");
    let mut map = tokens
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for token in issued_tokens {
        map.remove(&token);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&args.root).map_err(|e| format!("{}: {e}", args.root.display()))?;
    for certificate in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots
            .add(certificate.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // TCP_NODELAY, as certbot (urllib3), lego (Go) and reqwest set it.
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp);
    let client = SharedClient(HyperClient::builder(TokioExecutor::new()).build(connector));

    let tokens: Tokens = Arc::new(Mutex::new(HashMap::new()));
    let responder = axum::Router::new()
        .route(
            "/.well-known/acme-challenge/{token}",
            axum::routing::get(answer),
        )
        .with_state(tokens.clone());
    let listener = tokio::net::TcpListener::bind(args.http01_listen)
        .await
        .map_err(|e| format!("{}: {e}", args.http01_listen))?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, responder).await;
    });

    let run = format!(
        "{:x}",
        std::process::id() ^ (Instant::now().elapsed().as_nanos() as u32)
    );
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let stop_at = measure_from + Duration::from_secs(args.seconds);
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, tokens, counter, directory, domain, run) = (
            client.clone(),
            tokens.clone(),
            counter.clone(),
            args.directory.clone(),
            args.domain.clone(),
            run.clone(),
        );
        workers.push(tokio::spawn(async move {
            let (mut done, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
            let mut first_error = None;
            while Instant::now() < stop_at {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let began = Instant::now();
                let result =
                    full_order(&client, &directory, format!("o{n}-{run}.{domain}"), &tokens).await;
                if began >= measure_from && Instant::now() <= stop_at {
                    match result {
                        Ok(()) => {
                            done += 1;
                            latencies.push(began.elapsed().as_secs_f64() * 1000.0);
                        }
                        Err(error) => {
                            errors += 1;
                            first_error.get_or_insert(error);
                        }
                    }
                } else if let Err(error) = result {
                    first_error.get_or_insert(error);
                }
            }
            (done, errors, latencies, first_error)
        }));
    }
    let (mut done, mut errors, mut latencies, mut first_error) = (0, 0, Vec::new(), None);
    for worker in workers {
        let (d, e, l, f) = worker.await.map_err(|e| e.to_string())?;
        done += d;
        errors += e;
        latencies.extend(l);
        if first_error.is_none() {
            first_error = f;
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{}",
        serde_json::json!({
            "target": "acme",
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "orders": done,
            "errors": errors,
            "orders_per_second": done as f64 / args.seconds as f64,
            "p50_ms": percentile(0.5),
            "p99_ms": percentile(0.99),
            "first_error": first_error,
        })
    );
    Ok(())
}
