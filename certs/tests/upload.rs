//! Uploaded certificates: every check names its problem, and a good one is
//! stored with its key sealed and served back unsealed to the ingress. On
//! the embedded store, with certificates made by rcgen.

use lb_certs::CertError;
use lb_model::keys::Keys;
use lb_model::{CertSource, CertStatus};
use lb_store::embedded::EmbeddedStore;
use lb_store::secrets::Sealer;
use lb_store::{Store, StoreExt};
use rcgen::{date_time_ymd, CertificateParams, KeyPair};

struct Made {
    chain: String,
    key: String,
}

fn make(names: &[&str], expired: bool) -> Made {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    if expired {
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2001, 1, 1);
    } else {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2090, 1, 1);
    }
    let cert = params.self_signed(&key).unwrap();
    Made {
        chain: cert.pem(),
        key: key.serialize_pem(),
    }
}

async fn store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_dir(dir.path()).await.unwrap();
    (dir, store)
}

#[tokio::test]
async fn bad_uploads_are_refused_naming_the_problem() {
    let (_dir, store) = store().await;
    let keys = Keys::default();
    let sealer = Sealer::from_key([7; 32]);
    let good = make(&["app.example.com"], false);
    let other = make(&["app.example.com"], false);
    let upload = |domain: &'static str, chain: String, key: String| {
        let (store, keys, sealer) = (&store, &keys, &sealer);
        async move { lb_certs::upload(store, keys, sealer, domain, &chain, &key).await }
    };

    let err = upload("app.example.com", good.chain.clone(), other.key.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch), "{err}");
    assert!(err.is_bad_input());
    assert!(err.to_string().contains("does not match"), "{err}");

    let err = upload("www.example.com", good.chain.clone(), good.key.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CertError::DomainNotCovered { domain, names }
            if domain == "www.example.com" && names == &["app.example.com"]),
        "{err}"
    );
    assert!(err.to_string().contains("www.example.com"), "{err}");

    let expired = make(&["app.example.com"], true);
    let err = upload("app.example.com", expired.chain, expired.key)
        .await
        .unwrap_err();
    assert!(matches!(err, CertError::Expired { .. }), "{err}");
    assert!(err.to_string().contains("expired"), "{err}");

    let err = upload("app.example.com", "hello".into(), good.key.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, CertError::NoCertificate), "{err}");

    let garbage =
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
    let err = upload("app.example.com", garbage.into(), good.key.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, CertError::BadCertificate { index: 0, .. }),
        "{err}"
    );

    let err = upload("app.example.com", good.chain.clone(), "garbage".into())
        .await
        .unwrap_err();
    assert!(matches!(err, CertError::NoKey), "{err}");

    let err = upload("App.Example.com", good.chain.clone(), good.key.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, CertError::InvalidDomain(_)), "{err}");

    // Nothing was stored by any of them.
    let (stored, _) = store.list(&keys.certs()).await.unwrap();
    assert!(stored.is_empty());
}

#[tokio::test]
async fn a_good_upload_is_stored_sealed_and_served() {
    let (_dir, store) = store().await;
    let keys = Keys::default();
    let sealer = Sealer::from_key([7; 32]);
    let made = make(&["*.example.com"], false);

    // A wildcard certificate serves a name one label under it, and the
    // wildcard domain itself.
    for domain in ["app.example.com", "*.example.com"] {
        let record = lb_certs::upload(&store, &keys, &sealer, domain, &made.chain, &made.key)
            .await
            .unwrap();
        assert_eq!(record.source, CertSource::Uploaded);
        assert_eq!(record.status, CertStatus::Issued);
        assert_eq!(record.names, vec!["*.example.com".to_string()]);
    }

    let raw = store
        .get(&keys.cert("app.example.com"))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8(raw.value).unwrap();
    let key_body = made.key.lines().nth(1).unwrap();
    assert!(!raw.contains(key_body), "the key is stored in the clear");
    assert!(
        !raw.contains("PRIVATE KEY"),
        "the key is stored in the clear"
    );

    let record = lb_certs::get(&store, &keys, "app.example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(!format!("{record:?}").contains(&record.sealed_key));
    let view = lb_certs::status(&store, &keys, "app.example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view, record.view());
    let view = serde_json::to_string(&view).unwrap();
    assert!(!view.contains(&record.sealed_key));

    let served = lb_certs::certificates(&store, &keys, &sealer)
        .await
        .unwrap();
    assert_eq!(served.len(), 2);
    let app = served
        .iter()
        .find(|c| c.domains == ["app.example.com"])
        .unwrap();
    assert_eq!(app.key_pem.trim(), made.key.trim());
    assert_eq!(app.chain_pem.trim(), made.chain.trim());

    // Another cluster key cannot open it: skipped, not served garbled.
    let stranger = Sealer::from_key([8; 32]);
    assert!(lb_certs::certificates(&store, &keys, &stranger)
        .await
        .unwrap()
        .is_empty());

    assert!(lb_certs::remove(&store, &keys, "app.example.com")
        .await
        .unwrap());
    assert!(lb_certs::get(&store, &keys, "app.example.com")
        .await
        .unwrap()
        .is_none());
    assert!(!lb_certs::remove(&store, &keys, "app.example.com")
        .await
        .unwrap());
}
