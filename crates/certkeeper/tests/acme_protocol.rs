//! The ACME server against a hand-built client: every refusal the issue names gets the right
//! RFC 8555 error type and no certificate; state survives a restart; ARI with instant-acme.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use base64::Engine;
use common::acme::{DnsServer, RawAcme, acme_config, b64, challenge_of, csr_der, serve_http01};
use common::{TestServer, free_port};
use serde_json::{Value, json};

const POLICY: &str = r#"
[[rule]]
name = "example-only"
tenants = ["default"]
profiles = ["tls-server"]
allow_dns = ["*.example.com", "example.com"]
allow_ip = ["127.0.0.0/8"]
"#;

fn root_client(server: &TestServer) -> reqwest::Client {
    server.client.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_forbidden_requests_get_the_rfc_8555_error_and_no_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let http01_port = free_port();
    let config = acme_config(dir.path(), &dns, http01_port, free_port(), POLICY);
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let directory = server.url("/acme/default/directory");
    let mut acme = RawAcme::new(root_client(&server), &directory).await;
    acme.register().await;
    let before = server.inventory_count().await;

    // A replayed nonce: badNonce, with a fresh nonce to retry with.
    let url = acme.kid.clone().unwrap();
    let header = acme.header(&url).await;
    let body = acme.sign(&header, None);
    assert_eq!(acme.send(&url, &body).await.status, 200);
    let replay = acme.send(&url, &body).await;
    assert_eq!(replay.status, 400);
    assert_eq!(replay.error_type(), "badNonce", "{}", replay.text);
    assert!(replay.headers.contains_key("replay-nonce"));
    assert_eq!(replay.headers["content-type"], "application/problem+json");

    // A bad signature: malformed.
    let header = acme.header(&url).await;
    let mut body = acme.sign(&header, None);
    let mut signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body["signature"].as_str().unwrap())
        .unwrap();
    signature[5] ^= 0xff;
    body["signature"] = json!(b64(&signature));
    let bad = acme.send(&url, &body).await;
    assert_eq!(bad.error_type(), "malformed", "{}", bad.text);
    assert!(bad.json["detail"].as_str().unwrap().contains("signature"));

    // The `url` header names another resource: unauthorized.
    let mut header = acme.header(&url).await;
    header["url"] = json!(acme.url("newOrder"));
    let body = acme.sign(&header, None);
    let wrong = acme.send(&url, &body).await;
    assert_eq!(wrong.status, 403);
    assert_eq!(wrong.error_type(), "unauthorized", "{}", wrong.text);

    // Both `kid` and `jwk`: malformed.
    let mut header = acme.header(&url).await;
    header["jwk"] = acme.jwk();
    let body = acme.sign(&header, None);
    let both = acme.send(&url, &body).await;
    assert_eq!(both.error_type(), "malformed", "{}", both.text);

    // An algorithm the server does not accept: badSignatureAlgorithm.
    for alg in ["HS256", "none", "ES999"] {
        let mut header = acme.header(&url).await;
        header["alg"] = json!(alg);
        let body = acme.sign(&header, None);
        let refused = acme.send(&url, &body).await;
        assert_eq!(
            refused.error_type(),
            "badSignatureAlgorithm",
            "{alg}: {}",
            refused.text
        );
        assert!(
            refused.json["algorithms"]
                .as_array()
                .unwrap()
                .contains(&json!("ES256")),
            "{}",
            refused.text
        );
    }

    // Not JOSE: 415. A GET on a POST-only resource: 405 with a problem and a nonce.
    let header = acme.header(&url).await;
    let body = acme.sign(&header, None);
    let plain = acme
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status().as_u16(), 415);
    let get = acme.http.get(&url).send().await.unwrap();
    assert_eq!(get.status().as_u16(), 405);
    assert!(get.headers().contains_key("replay-nonce"));
    assert_eq!(get.headers()["allow"], "POST");
    // Updating an account with its own status is ignored (RFC 8555 §7.3.2).
    let same = acme.post(&url, Some(&json!({"status": "valid"}))).await;
    assert_eq!(same.status, 200, "{}", same.text);

    // Finalize before the order is ready: orderNotReady.
    let order = acme.new_order(&[("dns", "www.example.com")]).await;
    assert_eq!(order.status, 201, "{}", order.text);
    let finalize = order.json["finalize"].as_str().unwrap().to_string();
    let early = acme
        .post(
            &finalize,
            Some(&json!({"csr": b64(&csr_der(&["www.example.com"]))})),
        )
        .await;
    assert_eq!(early.status, 403);
    assert_eq!(early.error_type(), "orderNotReady", "{}", early.text);

    // A name outside the tenant's policy: rejectedIdentifier, naming the rule's verdict.
    let outside = acme.new_order(&[("dns", "www.example.org")]).await;
    assert_eq!(
        outside.error_type(),
        "rejectedIdentifier",
        "{}",
        outside.text
    );
    assert!(
        outside.json["detail"]
            .as_str()
            .unwrap()
            .contains("www.example.org")
    );

    // A wrong key authorization: the challenge and the order become invalid.
    let wrong_order = acme.new_order(&[("dns", "wrong.example.com")]).await;
    let authz_url = wrong_order.json["authorizations"][0]
        .as_str()
        .unwrap()
        .to_string();
    let authz = acme.post(&authz_url, None).await;
    let challenge = challenge_of(&authz.json, "http-01");
    let responder = serve_http01(http01_port, "not-the-key-authorization".into()).await;
    let answer = acme
        .post(challenge["url"].as_str().unwrap(), Some(&json!({})))
        .await;
    responder.abort();
    assert_eq!(answer.json["status"], "invalid", "{}", answer.text);
    assert_eq!(
        answer.json["error"]["type"], "urn:ietf:params:acme:error:incorrectResponse",
        "{}",
        answer.text
    );
    let order_now = acme.post(&wrong_order.location(), None).await;
    assert_eq!(order_now.json["status"], "invalid");
    let finalize_wrong = acme
        .post(
            wrong_order.json["finalize"].as_str().unwrap(),
            Some(&json!({"csr": b64(&csr_der(&["wrong.example.com"]))})),
        )
        .await;
    assert_eq!(finalize_wrong.error_type(), "orderNotReady");

    // CSR names that differ from the order's: badCSR.
    let order = acme.new_order(&[("dns", "csr.example.com")]).await;
    let answer = answer_dns01(&mut acme, &dns, &order.json).await;
    assert_eq!(answer["status"], "valid", "{answer}");
    let mismatch = acme
        .post(
            order.json["finalize"].as_str().unwrap(),
            Some(&json!({"csr": b64(&csr_der(&["csr.example.com", "other.example.com"]))})),
        )
        .await;
    assert_eq!(mismatch.error_type(), "badCSR", "{}", mismatch.text);
    // A CSR for the account's own key: badCSR (RFC 8555 §11.1).
    let account_key = rcgen::KeyPair::try_from(acme.pkcs8.as_slice()).unwrap();
    let own_key = acme
        .post(
            order.json["finalize"].as_str().unwrap(),
            Some(&json!({"csr": b64(&common::acme::csr_der_with_key(&["csr.example.com"], &account_key))})),
        )
        .await;
    assert_eq!(own_key.error_type(), "badCSR", "{}", own_key.text);
    assert!(own_key.text.contains("account key"), "{}", own_key.text);
    // The order is still ready: a correct CSR is accepted afterwards.
    let good = acme
        .post(
            order.json["finalize"].as_str().unwrap(),
            Some(&json!({"csr": b64(&csr_der(&["csr.example.com"]))})),
        )
        .await;
    assert_eq!(good.json["status"], "valid", "{}", good.text);

    // Only the last order produced a certificate.
    assert_eq!(server.inventory_count().await, before + 1);
    // Each refused finalize and the policy refusal were audited as denials.
    let audit = server.audit().await;
    let denied: Vec<&Value> = audit
        .iter()
        .filter(|e| {
            e["outcome"] == "denied" && e["actor"].as_str().unwrap_or("").starts_with("acme:")
        })
        .collect();
    assert!(denied.len() >= 2, "denials: {denied:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_orders_and_nonces_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let http01_port = free_port();
    let config = acme_config(dir.path(), &dns, http01_port, free_port(), "");
    let data = dir.path().join("data");
    // The same port after the restart: account and order URLs include it.
    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["--config", config.to_str().unwrap(), "--listen", &listen];
    let mut server = TestServer::start(&data, &args);
    let directory = server.url("/acme/default/directory");
    let mut acme = RawAcme::new(root_client(&server), &directory).await;
    acme.register().await;
    let order = acme.new_order(&[("dns", "restart.example.com")]).await;
    assert_eq!(order.status, 201);
    // A nonce handed out before the restart, and one used before it.
    let unused = acme.fresh_nonce().await;
    let url = acme.kid.clone().unwrap();
    let used_header = acme.header(&url).await;
    let used_body = acme.sign(&used_header, None);
    assert_eq!(acme.send(&url, &used_body).await.status, 200);
    // Give the background flush of read-only nonces its moment.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    server.stop();

    let server = TestServer::start(&data, &args);
    acme.http = root_client(&server);
    let replay = acme.send(&url, &used_body).await;
    assert_eq!(replay.error_type(), "badNonce", "{}", replay.text);
    let header = json!({"alg": "ES256", "nonce": unused, "url": order.location(), "kid": url});
    let body = acme.sign(&header, None);
    let fetched = acme.send(&order.location(), &body).await;
    assert_eq!(fetched.status, 200, "{}", fetched.text);
    assert_eq!(
        fetched.json["identifiers"][0]["value"],
        "restart.example.com"
    );
    // And the order can be completed after the restart.
    let authz = acme
        .post(order.json["authorizations"][0].as_str().unwrap(), None)
        .await;
    let challenge = challenge_of(&authz.json, "http-01");
    let responder = serve_http01(
        http01_port,
        format!(
            "{}.{}",
            challenge["token"].as_str().unwrap(),
            acme.thumbprint()
        ),
    )
    .await;
    let answer = acme
        .post(challenge["url"].as_str().unwrap(), Some(&json!({})))
        .await;
    responder.abort();
    assert_eq!(answer.json["status"], "valid", "{}", answer.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_rollover_deactivation_and_eab_requirement() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let config = acme_config(
        dir.path(),
        &dns,
        free_port(),
        free_port(),
        "[[acme.tenant]]\nname = \"locked\"\nrequire_eab = true\n",
    );
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    // A tenant that requires EAB refuses a plain newAccount.
    let mut locked =
        RawAcme::new(root_client(&server), &server.url("/acme/locked/directory")).await;
    assert_eq!(locked.directory["meta"]["externalAccountRequired"], true);
    let url = locked.url("newAccount");
    let refused = locked
        .post(&url, Some(&json!({"termsOfServiceAgreed": true})))
        .await;
    assert_eq!(
        refused.error_type(),
        "externalAccountRequired",
        "{}",
        refused.text
    );
    // An unknown tenant has no directory.
    let unknown = server
        .client
        .get(server.url("/acme/nobody/directory"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 400);

    let mut acme = RawAcme::new(root_client(&server), &server.url("/acme/default/directory")).await;
    acme.register().await;
    let kid = acme.kid.clone().unwrap();
    // onlyReturnExisting finds the account by key.
    let saved_kid = acme.kid.take();
    let url = acme.url("newAccount");
    let existing = acme
        .post(&url, Some(&json!({"onlyReturnExisting": true})))
        .await;
    assert_eq!(existing.status, 200);
    assert_eq!(existing.location(), kid);
    acme.kid = saved_kid;

    // Key rollover: the inner JWS is signed by the new key.
    let mut fresh =
        RawAcme::new(root_client(&server), &server.url("/acme/default/directory")).await;
    let key_change = acme.url("keyChange");
    let inner_header = json!({"alg": "ES256", "jwk": fresh.jwk(), "url": key_change});
    let inner = fresh.sign(
        &inner_header,
        Some(&json!({"account": kid, "oldKey": acme.jwk()})),
    );
    let rolled = acme.post(&key_change, Some(&inner)).await;
    assert_eq!(rolled.status, 200, "{}", rolled.text);
    // The old key is now refused; the new one works.
    let old = acme.post(&kid, None).await;
    assert_eq!(old.error_type(), "malformed", "{}", old.text);
    fresh.kid = Some(kid.clone());
    assert_eq!(fresh.post(&kid, None).await.status, 200);
    // Deactivation: later requests are unauthorized.
    let deactivated = fresh
        .post(&kid, Some(&json!({"status": "deactivated"})))
        .await;
    assert_eq!(deactivated.json["status"], "deactivated");
    let after = fresh.post(&kid, None).await;
    assert_eq!(after.error_type(), "unauthorized", "{}", after.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn ari_window_replaces_and_already_replaced_with_instant_acme() {
    use instant_acme::{
        Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewAccount,
        NewOrder, RetryPolicy,
    };
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let http01_port = free_port();
    let config = acme_config(dir.path(), &dns, http01_port, free_port(), "");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let directory = server.url("/acme/default/directory");
    let root = dir.path().join("data/ca/root.crt");
    let (account, _) = Account::builder_with_root(&root)
        .unwrap()
        .create(
            &NewAccount {
                contact: &["mailto:ops@example.com"],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory,
            None,
        )
        .await
        .unwrap();

    async fn obtain(
        account: &Account,
        name: &str,
        http01_port: u16,
        replaces: Option<CertificateIdentifier<'_>>,
    ) -> Result<(String, Option<String>), instant_acme::Error> {
        let identifiers = [Identifier::Dns(name.to_string())];
        let mut new_order = NewOrder::new(&identifiers);
        if let Some(id) = replaces {
            new_order = new_order.replaces(id);
        }
        let mut order = account.new_order(&new_order).await?;
        let replaced = order.state().replaces.as_ref().map(|r| r.to_string());
        let mut authorizations = order.authorizations();
        let mut responders = Vec::new();
        while let Some(result) = authorizations.next().await {
            let mut authz = result?;
            if authz.status == AuthorizationStatus::Valid {
                continue;
            }
            let mut challenge = authz.challenge(ChallengeType::Http01).unwrap();
            responders.push(
                serve_http01(
                    http01_port,
                    challenge.key_authorization().as_str().to_string(),
                )
                .await,
            );
            challenge.set_ready().await?;
        }
        order.poll_ready(&RetryPolicy::default()).await?;
        order.finalize().await?;
        let chain = order.poll_certificate(&RetryPolicy::default()).await?;
        for responder in responders {
            responder.abort();
        }
        Ok((chain, replaced))
    }

    let (first, _) = obtain(&account, "ari.example.com", http01_port, None)
        .await
        .unwrap();
    let first_der = pem::parse(&first).unwrap().into_contents();
    let id = CertificateIdentifier::try_from(&rustls::pki_types::CertificateDer::from(
        first_der.clone(),
    ))
    .unwrap();
    // The suggested window lies inside the validity, in the future.
    let (info, retry_after) = account.renewal_info(&id).await.unwrap();
    assert!(info.suggested_window.start < info.suggested_window.end);
    assert!(info.suggested_window.start > time::OffsetDateTime::now_utc());
    assert!(retry_after.as_secs() > 0);

    // The renewal names the certificate it replaces; the order echoes it.
    let (second, replaced) = obtain(&account, "ari.example.com", http01_port, Some(id.clone()))
        .await
        .unwrap();
    assert_eq!(replaced.as_deref(), Some(id.to_string().as_str()));
    let second_der = pem::parse(&second).unwrap().into_contents();
    assert_ne!(first_der, second_der);
    // The inventory records the replacement.
    let serial_of = |der: &[u8]| certkeeper_pki::parse_certificate(der).unwrap().serial;
    let (status, view, _) = server
        .get(
            &format!("/api/v1/certificates/{}", serial_of(&first_der)),
            Some(server.token()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        view["superseded_by"],
        json!(serial_of(&second_der)),
        "{view}"
    );

    // Replacing it a second time: alreadyReplaced (409).
    let again = obtain(&account, "ari.example.com", http01_port, Some(id.clone())).await;
    let message = format!("{:?}", again.expect_err("second replacement refused"));
    assert!(message.contains("alreadyReplaced"), "{message}");

    // After revocation the window moves into the past: renew now.
    let (status, _, text) = server
        .post(
            "/api/v1/revocations",
            Some(server.token()),
            &json!({"serial": serial_of(&second_der), "reason": "superseded"}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let second_id =
        CertificateIdentifier::try_from(&rustls::pki_types::CertificateDer::from(second_der))
            .unwrap();
    let (info, _) = account.renewal_info(&second_id).await.unwrap();
    assert!(info.suggested_window.end < time::OffsetDateTime::now_utc());
}

/// Completes the dns-01 challenge of the order's first authorization; returns the challenge.
async fn answer_dns01(acme: &mut RawAcme, dns: &DnsServer, order: &Value) -> Value {
    answer_dns01_of(acme, dns, order, 0).await
}

/// Completes the dns-01 challenge of the order's authorization `index`; returns the challenge.
async fn answer_dns01_of(
    acme: &mut RawAcme,
    dns: &DnsServer,
    order: &Value,
    index: usize,
) -> Value {
    let authz = acme
        .post(order["authorizations"][index].as_str().unwrap(), None)
        .await;
    let name = authz.json["identifier"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let challenge = challenge_of(&authz.json, "dns-01");
    let key_authorization = format!(
        "{}.{}",
        challenge["token"].as_str().unwrap(),
        acme.thumbprint()
    );
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes());
    dns.set_txt(&name, &b64(digest.as_ref())).await;
    acme.post(challenge["url"].as_str().unwrap(), Some(&json!({})))
        .await
        .json
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_answer_rate_limited_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let http01_port = free_port();
    let config = acme_config(
        dir.path(),
        &dns,
        http01_port,
        free_port(),
        "[acme.rate_limits]\norders_per_account = 2\nfailed_validations_per_name = 1\n",
    );
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let directory = server.url("/acme/default/directory");
    let mut acme = RawAcme::new(root_client(&server), &directory).await;
    acme.register().await;
    for name in ["a.example.com", "b.example.com"] {
        assert_eq!(acme.new_order(&[("dns", name)]).await.status, 201);
    }
    let limited = acme.new_order(&[("dns", "c.example.com")]).await;
    assert_eq!(limited.status, 429, "{}", limited.text);
    assert_eq!(limited.error_type(), "rateLimited");
    let wait: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 0 && wait <= 3600, "Retry-After {wait}");

    // A failed validation counts against the name, for that account.
    let mut other = RawAcme::new(root_client(&server), &directory).await;
    other.register().await;
    let order = other.new_order(&[("dns", "broken.example.com")]).await;
    let authz = other
        .post(order.json["authorizations"][0].as_str().unwrap(), None)
        .await;
    let challenge = challenge_of(&authz.json, "http-01");
    // Nothing listens on the http-01 port: the validation fails with a connection error.
    let failed = other
        .post(challenge["url"].as_str().unwrap(), Some(&json!({})))
        .await;
    assert_eq!(failed.json["status"], "invalid", "{}", failed.text);
    assert_eq!(
        failed.json["error"]["type"],
        "urn:ietf:params:acme:error:connection"
    );
    let refused = other.new_order(&[("dns", "broken.example.com")]).await;
    assert_eq!(refused.error_type(), "rateLimited", "{}", refused.text);
    assert!(refused.headers.contains_key("retry-after"));
    // Another account's allowance is its own: nobody can lock a name for everyone.
    let mut third = RawAcme::new(root_client(&server), &directory).await;
    third.register().await;
    let fine = third.new_order(&[("dns", "broken.example.com")]).await;
    assert_eq!(fine.status, 201, "{}", fine.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn caa_records_authorise_or_refuse_this_ca() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let config = acme_config(
        dir.path(),
        &dns,
        free_port(),
        free_port(),
        "caa_identities = [\"ca.example.net\"]\n",
    );
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let mut acme = RawAcme::new(root_client(&server), &server.url("/acme/default/directory")).await;
    assert_eq!(
        acme.directory["meta"]["caaIdentities"],
        json!(["ca.example.net"])
    );
    acme.register().await;
    dns.add_caa("allowed.example.com", "ca.example.net").await;
    dns.add_caa("example.org", "someone-else.example").await;

    let allowed = acme.new_order(&[("dns", "allowed.example.com")]).await;
    let outcome = answer_dns01(&mut acme, &dns, &allowed.json).await;
    assert_eq!(outcome["status"], "valid", "{outcome}");
    // The CAA record set of a parent domain applies to its subdomains.
    let refused = acme.new_order(&[("dns", "www.sub.example.org")]).await;
    let outcome = answer_dns01(&mut acme, &dns, &refused.json).await;
    assert_eq!(outcome["status"], "invalid", "{outcome}");
    assert_eq!(
        outcome["error"]["type"], "urn:ietf:params:acme:error:caa",
        "{outcome}"
    );
    // No CAA record anywhere: any CA may issue.
    let open = acme.new_order(&[("dns", "open.example.com")]).await;
    let outcome = answer_dns01(&mut acme, &dns, &open.json).await;
    assert_eq!(outcome["status"], "valid", "{outcome}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ip_identifiers_validate_over_http01_and_profiles_are_offered() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let http01_port = free_port();
    let config = acme_config(dir.path(), &dns, http01_port, free_port(), "");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let mut acme = RawAcme::new(root_client(&server), &server.url("/acme/default/directory")).await;
    let profiles = acme.directory["meta"]["profiles"]
        .as_object()
        .unwrap()
        .clone();
    assert!(
        profiles.contains_key("tls-server") && profiles.contains_key("mtls"),
        "{profiles:?}"
    );
    acme.register().await;
    // An unknown profile is refused; a listed one is recorded on the order.
    let url = acme.url("newOrder");
    let unknown = acme
        .post(
            &url,
            Some(
                &json!({"identifiers": [{"type": "ip", "value": "127.0.0.1"}], "profile": "nope"}),
            ),
        )
        .await;
    assert_eq!(unknown.error_type(), "malformed", "{}", unknown.text);
    // DNS-type identifiers that are IP addresses are refused (RFC 8738 uses type "ip").
    let confused = acme.new_order(&[("dns", "127.0.0.1")]).await;
    assert_eq!(
        confused.error_type(),
        "rejectedIdentifier",
        "{}",
        confused.text
    );
    let order = acme
        .post(
            &url,
            Some(
                &json!({"identifiers": [{"type": "ip", "value": "127.0.0.1"}], "profile": "mtls"}),
            ),
        )
        .await;
    assert_eq!(order.status, 201, "{}", order.text);
    assert_eq!(order.json["profile"], "mtls");
    let authz = acme
        .post(order.json["authorizations"][0].as_str().unwrap(), None)
        .await;
    let kinds: Vec<&str> = authz.json["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["http-01", "tls-alpn-01"],
        "no dns-01 for IP addresses"
    );
    let challenge = authz.json["challenges"][0].clone();
    let responder = serve_http01(
        http01_port,
        format!(
            "{}.{}",
            challenge["token"].as_str().unwrap(),
            acme.thumbprint()
        ),
    )
    .await;
    let answer = acme
        .post(challenge["url"].as_str().unwrap(), Some(&json!({})))
        .await;
    responder.abort();
    assert_eq!(answer.json["status"], "valid", "{}", answer.text);
    let done = acme
        .post(
            order.json["finalize"].as_str().unwrap(),
            Some(&json!({"csr": b64(&csr_der(&["127.0.0.1"]))})),
        )
        .await;
    assert_eq!(done.json["status"], "valid", "{}", done.text);
    let certificate = acme
        .post(done.json["certificate"].as_str().unwrap(), None)
        .await;
    assert_eq!(
        certificate.headers["content-type"],
        "application/pem-certificate-chain"
    );
    let leaf = pem::parse(&certificate.text).unwrap().into_contents();
    let summary = certkeeper_pki::parse_certificate(&leaf).unwrap();
    assert_eq!(
        summary.sans,
        vec![certkeeper_pki::SanEntry::Ip("127.0.0.1".parse().unwrap())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn authorizations_are_reused_and_the_certificate_key_can_revoke() {
    use common::acme::csr_der_with_key;
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let config = acme_config(dir.path(), &dns, free_port(), free_port(), "");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let directory = server.url("/acme/default/directory");
    let mut acme = RawAcme::new(root_client(&server), &directory).await;
    acme.register().await;
    // Contacts can be changed; a non-mailto contact is refused.
    let kid = acme.kid.clone().unwrap();
    let updated = acme
        .post(&kid, Some(&json!({"contact": ["mailto:pki@example.com"]})))
        .await;
    assert_eq!(
        updated.json["contact"],
        json!(["mailto:pki@example.com"]),
        "{}",
        updated.text
    );
    let refused = acme
        .post(&kid, Some(&json!({"contact": ["tel:+1555"]})))
        .await;
    assert_eq!(
        refused.error_type(),
        "unsupportedContact",
        "{}",
        refused.text
    );

    let first = acme.new_order(&[("dns", "reuse.example.com")]).await;
    let outcome = answer_dns01(&mut acme, &dns, &first.json).await;
    assert_eq!(outcome["status"], "valid", "{outcome}");
    // The next order of the same account for the same name is ready at once.
    let second = acme.new_order(&[("dns", "reuse.example.com")]).await;
    assert_eq!(second.status, 201);
    assert_eq!(second.json["status"], "ready", "{}", second.text);
    assert_eq!(second.json["authorizations"], first.json["authorizations"]);

    // Two concurrent finalize requests for one ready order: exactly one certificate.
    let racing = acme
        .new_order(&[
            ("dns", "reuse.example.com"),
            ("dns", "www.reuse.example.com"),
        ])
        .await;
    let outcome = answer_dns01_of(&mut acme, &dns, &racing.json, 1).await;
    assert_eq!(outcome["status"], "valid", "{outcome}");
    let before = server.inventory_count().await;
    let finalize_url = racing.json["finalize"].as_str().unwrap().to_string();
    let csr = json!({"csr": b64(&csr_der(&["reuse.example.com", "www.reuse.example.com"]))});
    let first_header = acme.header(&finalize_url).await;
    let first_body = acme.sign(&first_header, Some(&csr));
    let second_header = acme.header(&finalize_url).await;
    let second_body = acme.sign(&second_header, Some(&csr));
    let send = |body: Value| {
        let http = acme.http.clone();
        let url = finalize_url.clone();
        async move {
            let response = http
                .post(&url)
                .header("content-type", "application/jose+json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let (a, b) = tokio::join!(send(first_body), send(second_body));
    let valid = [&a, &b].iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(valid, 1, "{a:?} {b:?}");
    assert!(
        a.1.contains("orderNotReady") || b.1.contains("orderNotReady"),
        "{a:?} {b:?}"
    );
    assert_eq!(server.inventory_count().await, before + 1);

    // Finalize with a key the test keeps, then revoke signed by that key (no account).
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    let certificate_key = rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap();
    let done = acme
        .post(
            second.json["finalize"].as_str().unwrap(),
            Some(&json!({"csr": b64(&csr_der_with_key(&["reuse.example.com"], &certificate_key))})),
        )
        .await;
    assert_eq!(done.json["status"], "valid", "{}", done.text);
    let chain = acme
        .post(done.json["certificate"].as_str().unwrap(), None)
        .await;
    let leaf = pem::parse(&chain.text).unwrap().into_contents();
    let serial = certkeeper_pki::parse_certificate(&leaf).unwrap().serial;

    // Another key cannot revoke it; the certificate's own key can.
    let mut stranger = RawAcme::new(root_client(&server), &directory).await;
    let url = stranger.url("revokeCert");
    let denied = stranger
        .post(&url, Some(&json!({"certificate": b64(&leaf), "reason": 1})))
        .await;
    assert_eq!(denied.error_type(), "unauthorized", "{}", denied.text);
    let mut holder = RawAcme::with_key(root_client(&server), &directory, pkcs8.as_ref()).await;
    let bad_reason = holder
        .post(&url, Some(&json!({"certificate": b64(&leaf), "reason": 7})))
        .await;
    assert_eq!(
        bad_reason.error_type(),
        "badRevocationReason",
        "{}",
        bad_reason.text
    );
    let revoked = holder
        .post(&url, Some(&json!({"certificate": b64(&leaf), "reason": 1})))
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let again = holder
        .post(&url, Some(&json!({"certificate": b64(&leaf), "reason": 1})))
        .await;
    assert_eq!(again.error_type(), "alreadyRevoked", "{}", again.text);
    let (status, view, _) = server
        .get(
            &format!("/api/v1/certificates/{serial}"),
            Some(server.token()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(view["revocation_reason"], "keyCompromise");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_tenant_directory_applies_its_own_policy() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let config = acme_config(
        dir.path(),
        &dns,
        free_port(),
        free_port(),
        r#"[[acme.tenant]]
name = "team-a"

[[rule]]
name = "team-a-names"
tenants = ["team-a"]
profiles = ["tls-server"]
allow_dns = [".team-a.example.com"]

[[rule]]
name = "default-names"
tenants = ["default"]
profiles = ["tls-server"]
allow_dns = [".example.com"]
deny_dns = [".team-a.example.com"]
"#,
    );
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let mut team = RawAcme::new(root_client(&server), &server.url("/acme/team-a/directory")).await;
    team.register().await;
    let mut other =
        RawAcme::new(root_client(&server), &server.url("/acme/default/directory")).await;
    other.register().await;

    // team-a's directory takes team-a's names and refuses the rest.
    let own = team.new_order(&[("dns", "www.team-a.example.com")]).await;
    assert_eq!(own.status, 201, "{}", own.text);
    let foreign = team.new_order(&[("dns", "www.example.com")]).await;
    assert_eq!(
        foreign.error_type(),
        "rejectedIdentifier",
        "{}",
        foreign.text
    );
    // The default directory's policy denies team-a's names.
    let denied = other.new_order(&[("dns", "www.team-a.example.com")]).await;
    assert_eq!(denied.error_type(), "rejectedIdentifier", "{}", denied.text);
    assert!(
        denied.json["detail"]
            .as_str()
            .unwrap()
            .contains("default-names"),
        "{}",
        denied.text
    );
    // An account of one directory does not exist in another.
    let kid = team.kid.clone().unwrap();
    let foreign_kid = kid.replace("/acme/team-a/", "/acme/default/");
    other.kid = Some(foreign_kid);
    let url = other.url("newOrder");
    let wrong = other
        .post(
            &url,
            Some(&json!({"identifiers": [{"type": "dns", "value": "x.example.com"}]})),
        )
        .await;
    assert_eq!(wrong.error_type(), "accountDoesNotExist", "{}", wrong.text);

    // Issued through team-a's directory, the certificate belongs to tenant team-a.
    let outcome = answer_dns01(&mut team, &dns, &own.json).await;
    assert_eq!(outcome["status"], "valid", "{outcome}");
    let done = team
        .post(
            own.json["finalize"].as_str().unwrap(),
            Some(&json!({"csr": b64(&csr_der(&["www.team-a.example.com"]))})),
        )
        .await;
    assert_eq!(done.json["status"], "valid", "{}", done.text);
    let chain = team
        .post(done.json["certificate"].as_str().unwrap(), None)
        .await;
    let serial =
        certkeeper_pki::parse_certificate(&pem::parse(&chain.text).unwrap().into_contents())
            .unwrap()
            .serial;
    let (_, view, _) = server
        .get(
            &format!("/api/v1/certificates/{serial}"),
            Some(server.token()),
        )
        .await;
    assert_eq!(view["tenant"], "team-a");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_validation_is_processing_and_survives_a_server_kill() {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start();
    let http01_port = free_port();
    let config = acme_config(dir.path(), &dns, http01_port, free_port(), "");
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["--config", config.to_str().unwrap(), "--listen", &listen];
    let mut server = TestServer::start(&data, &args);
    let mut acme = RawAcme::new(root_client(&server), &server.url("/acme/default/directory")).await;
    acme.register().await;
    let order = acme.new_order(&[("dns", "slow.example.com")]).await;
    let authz_url = order.json["authorizations"][0]
        .as_str()
        .unwrap()
        .to_string();
    let authz = acme.post(&authz_url, None).await;
    let challenge = challenge_of(&authz.json, "http-01");
    // The responder answers after 4 s: longer than the challenge response waits (3 s).
    let responder = common::acme::serve_http01_after(
        http01_port,
        format!(
            "{}.{}",
            challenge["token"].as_str().unwrap(),
            acme.thumbprint()
        ),
        std::time::Duration::from_secs(4),
    )
    .await;
    let answer = acme
        .post(challenge["url"].as_str().unwrap(), Some(&json!({})))
        .await;
    assert_eq!(answer.json["status"], "processing", "{}", answer.text);
    assert!(answer.headers.contains_key("retry-after"));
    // Killed while validating: the acknowledged "processing" must not be lost.
    server.kill();
    let server = TestServer::start(&data, &args);
    acme.http = root_client(&server);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = acme.post(&authz_url, None).await;
        if now.json["status"] == "valid" {
            break;
        }
        assert_eq!(now.json["status"], "pending", "{}", now.text);
        assert!(
            std::time::Instant::now() < deadline,
            "validation was not resumed: {}",
            now.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    responder.abort();
    let ready = acme.post(&order.location(), None).await;
    assert_eq!(ready.json["status"], "ready", "{}", ready.text);
}
