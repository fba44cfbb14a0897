//! Pulls from real registries on loopback (the rig): plain HTTP, HTTPS with a private CA
//! and basic auth, and Bearer tokens; error messages for the usual mistakes.

mod common;

use common::{assert_blob_ok, isolated_options, Rig};
use strata_oci::image::Platform;
use strata_oci::media;
use strata_oci::reference::Reference;
use strata_oci::registry::{credentials, PulledImage, RegistryClient, RegistryError, RegistryOptions};
use strata_oci::store::BlobStore;

fn amd64() -> Platform {
    "linux/amd64".parse().unwrap()
}

fn busybox(registry: &str) -> Reference {
    format!("{registry}/library/busybox:latest").parse().unwrap()
}

/// Everything a pull promises: blobs present and verified, platform right.
fn check_pulled(img: &PulledImage, store: &BlobStore, arch: &str) {
    assert_eq!(img.config.architecture, arch);
    assert_eq!(img.config.os, "linux");
    assert!(media::is_manifest(&img.manifest_media_type), "{}", img.manifest_media_type);
    let index = img.index_digest.as_ref().expect("busybox:latest is an index");
    assert_blob_ok(store, index);
    assert_blob_ok(store, &img.manifest_digest);
    assert_blob_ok(store, &img.config_digest);
    assert!(!img.manifest.layers.is_empty());
    for l in &img.manifest.layers {
        assert_blob_ok(store, &l.digest);
        assert_eq!(store.size(&l.digest).unwrap(), l.size);
    }
    assert_eq!(img.config.rootfs.diff_ids.len(), img.manifest.layers.len());
    let tmp_left = std::fs::read_dir(store.root().join("tmp")).unwrap().count();
    assert_eq!(tmp_left, 0, "no temp files left in the store");
}

#[tokio::test]
async fn pull_amd64_from_plain_registry() {
    let Some(rig) = Rig::load("pull_amd64_from_plain_registry") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let client = RegistryClient::new(isolated_options(cfg.path())).unwrap();
    let r = busybox(rig.plain());
    let img = client.pull_image(&r, &amd64(), &store).await.unwrap();
    check_pulled(&img, &store, "amd64");
    assert_eq!(img.reference, r);

    // Pulling again finds everything in place.
    let again = client.pull_image(&r, &amd64(), &store).await.unwrap();
    assert_eq!(again.manifest_digest, img.manifest_digest);
}

#[tokio::test]
async fn pull_amd64_from_tls_registry_with_login() {
    let Some(rig) = Rig::load("pull_amd64_from_tls_registry_with_login") else { return };
    let cfg = tempfile::tempdir().unwrap();
    credentials::login(Some(cfg.path()), rig.tls(), rig.user(), rig.pass()).unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let opts = RegistryOptions { ca_files: vec![rig.ca()], ..isolated_options(cfg.path()) };
    let client = RegistryClient::new(opts).unwrap();
    let img = client.pull_image(&busybox(rig.tls()), &amd64(), &store).await.unwrap();
    check_pulled(&img, &store, "amd64");
}

#[tokio::test]
async fn tls_registry_ca_from_certs_d() {
    let Some(rig) = Rig::load("tls_registry_ca_from_certs_d") else { return };
    let cfg = tempfile::tempdir().unwrap();
    credentials::login(Some(cfg.path()), rig.tls(), rig.user(), rig.pass()).unwrap();
    let host_dir = cfg.path().join("certs.d").join(rig.tls());
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(rig.ca(), host_dir.join("ca.crt")).unwrap();
    let client = RegistryClient::new(isolated_options(cfg.path())).unwrap();
    let m = client.resolve(&busybox(rig.tls())).await.unwrap();
    assert!(m.is_index());
}

#[tokio::test]
async fn pull_amd64_from_token_registry_anonymously() {
    let Some(rig) = Rig::load("pull_amd64_from_token_registry_anonymously") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let client = RegistryClient::new(isolated_options(cfg.path())).unwrap();
    let img = client.pull_image(&busybox(rig.token()), &amd64(), &store).await.unwrap();
    check_pulled(&img, &store, "amd64");
}

#[tokio::test]
async fn pull_from_token_registry_with_credential_helper() {
    use std::os::unix::fs::PermissionsExt;
    let Some(rig) = Rig::load("pull_from_token_registry_with_credential_helper") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let helper = bin.path().join("docker-credential-rig");
    // The helper writes down every call: the token registry also grants anonymous
    // pulls, so only its trace shows that the helper was asked (and for what).
    let trace = bin.path().join("calls");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\necho \"$1 $server\" >> {trace}\n[ \"$1\" = get ] && [ \"$server\" = \"{}\" ] && echo '{{\"ServerURL\":\"'$server'\",\"Username\":\"{}\",\"Secret\":\"{}\"}}' && exit 0\necho 'credentials not found in native keychain'; exit 1\n",
            rig.token(),
            rig.user(),
            rig.pass(),
            trace = trace.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(cfg.path().join("config.json"), format!(r#"{{"credHelpers":{{"{}":"rig"}}}}"#, rig.token()))
        .unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let opts =
        RegistryOptions { credential_helper_dirs: vec![bin.path().to_path_buf()], ..isolated_options(cfg.path()) };
    let client = RegistryClient::new(opts).unwrap();
    let img = client.pull_image(&busybox(rig.token()), &amd64(), &store).await.unwrap();
    check_pulled(&img, &store, "amd64");
    let calls = std::fs::read_to_string(&trace).unwrap_or_default();
    assert_eq!(calls.trim(), format!("get {}", rig.token()), "the helper was asked once, for the registry");
}

#[tokio::test]
async fn pull_arm64_and_amd64_concurrently() {
    let Some(rig) = Rig::load("pull_arm64_and_amd64_concurrently") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let client = RegistryClient::new(isolated_options(cfg.path())).unwrap();
    let r = busybox(rig.plain());
    let arm: Platform = "linux/arm64".parse().unwrap();
    let amd = amd64();
    let (a, b) = tokio::join!(client.pull_image(&r, &arm, &store), client.pull_image(&r, &amd, &store));
    let (arm_img, amd_img) = (a.unwrap(), b.unwrap());
    check_pulled(&arm_img, &store, "arm64");
    check_pulled(&amd_img, &store, "amd64");
    assert_ne!(arm_img.manifest_digest, amd_img.manifest_digest);
    assert_eq!(arm_img.index_digest, amd_img.index_digest);
}

#[tokio::test]
async fn pull_by_digest() {
    let Some(rig) = Rig::load("pull_by_digest") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let client = RegistryClient::new(isolated_options(cfg.path())).unwrap();
    let tagged = busybox(rig.plain());
    let resolved = client.resolve(&tagged).await.unwrap();
    assert!(resolved.is_index());
    let head = client.resolve_descriptor(&tagged).await.unwrap();
    assert_eq!(head.digest, resolved.digest);
    assert_eq!(head.size, resolved.bytes.len() as u64);

    // Index digest.
    let by_digest: Reference = format!("{}/library/busybox@{}", rig.plain(), resolved.digest).parse().unwrap();
    let img = client.pull_image(&by_digest, &amd64(), &store).await.unwrap();
    assert_eq!(img.index_digest.as_ref(), Some(&resolved.digest));
    check_pulled(&img, &store, "amd64");

    // Tag and digest together; then the platform manifest's own digest (no index).
    let both: Reference = format!("{}/library/busybox:latest@{}", rig.plain(), resolved.digest).parse().unwrap();
    assert_eq!(client.resolve(&both).await.unwrap().digest, resolved.digest);
    let manifest_ref = tagged.with_digest(img.manifest_digest.clone());
    let single = client.pull_image(&manifest_ref, &amd64(), &store).await.unwrap();
    assert_eq!(single.index_digest, None);
    assert_eq!(single.manifest_digest, img.manifest_digest);
}

#[tokio::test]
async fn wrong_password_names_the_registry() {
    let Some(rig) = Rig::load("wrong_password_names_the_registry") else { return };
    for (registry, ca) in [(rig.tls(), Some(rig.ca())), (rig.token(), None)] {
        let cfg = tempfile::tempdir().unwrap();
        credentials::login(Some(cfg.path()), registry, rig.user(), "not-the-password").unwrap();
        let s = tempfile::tempdir().unwrap();
        let store = BlobStore::open(s.path()).unwrap();
        let opts = RegistryOptions { ca_files: ca.into_iter().collect(), ..isolated_options(cfg.path()) };
        let client = RegistryClient::new(opts).unwrap();
        let r = busybox(registry);
        let err = client.pull_image(&r, &amd64(), &store).await.unwrap_err();
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(matches!(err, RegistryError::AuthFailed { .. }), "{msg}");
        assert_eq!(
            msg,
            format!(
                "pull {r}: authentication failed (401 Unauthorized): check the credentials for {registry} (strata login {registry})"
            )
        );
    }
}

#[tokio::test]
async fn no_credentials_for_basic_auth_registry() {
    let Some(rig) = Rig::load("no_credentials_for_basic_auth_registry") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let opts = RegistryOptions { ca_files: vec![rig.ca()], ..isolated_options(cfg.path()) };
    let client = RegistryClient::new(opts).unwrap();
    let err = client.resolve(&busybox(rig.tls())).await.unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, RegistryError::AuthRequired { .. }), "{err}");
    assert!(err.to_string().contains(&format!("strata login {}", rig.tls())), "{err}");
}

#[tokio::test]
async fn missing_tag_names_the_reference() {
    let Some(rig) = Rig::load("missing_tag_names_the_reference") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let client = RegistryClient::new(isolated_options(cfg.path())).unwrap();
    let r: Reference = format!("{}/library/busybox:nope", rig.plain()).parse().unwrap();
    let err = client.pull_image(&r, &amd64(), &store).await.unwrap_err();
    eprintln!("{err}");
    assert!(err.is_not_found());
    assert_eq!(
        err.to_string(),
        format!("pull {r}: manifest unknown: tag \"nope\" not found in {}/library/busybox", rig.plain())
    );

    let r: Reference = format!("{}/library/nosuchrepo:latest", rig.plain()).parse().unwrap();
    let err = client.resolve(&r).await.unwrap_err();
    eprintln!("{err}");
    assert!(err.is_not_found());
    assert!(err.to_string().contains(&format!("{}/library/nosuchrepo", rig.plain())), "{err}");

    // The token registry hides nothing either: an anonymous token, then 404.
    let r: Reference = format!("{}/library/busybox:nope", rig.token()).parse().unwrap();
    let err = client.resolve(&r).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn unknown_platform_lists_the_available_ones() {
    let Some(rig) = Rig::load("unknown_platform_lists_the_available_ones") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let client = RegistryClient::new(isolated_options(cfg.path())).unwrap();
    let err = client.pull_image(&busybox(rig.plain()), &"linux/s390x".parse().unwrap(), &store).await.unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, RegistryError::NoMatchingPlatform { .. }));
    assert!(err.to_string().ends_with("available platforms: linux/amd64, linux/arm64"), "{err}");
}

#[tokio::test]
async fn connection_refused_and_untrusted_certificate() {
    let Some(rig) = Rig::load("connection_refused_and_untrusted_certificate") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let opts = RegistryOptions { max_attempts: 2, ..isolated_options(cfg.path()) };
    let client = RegistryClient::new(opts).unwrap();

    // A port nothing listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let r: Reference = format!("127.0.0.1:{port}/library/busybox:latest").parse().unwrap();
    let err = client.resolve(&r).await.unwrap_err();
    eprintln!("{err}");
    assert_eq!(err.to_string(), format!("resolve {r}: cannot connect to 127.0.0.1:{port}: connection refused"));

    // The TLS registry without its CA: a certificate error, not a fall back to HTTP.
    let err = client.resolve(&busybox(rig.tls())).await.unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, RegistryError::Tls { .. }), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn fetch_single_blob() {
    let Some(rig) = Rig::load("fetch_single_blob") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let store = BlobStore::open(s.path()).unwrap();
    let client = RegistryClient::new(isolated_options(cfg.path())).unwrap();
    let r = busybox(rig.token());
    let idx = client.resolve(&r).await.unwrap();
    let index: strata_oci::image::Index = serde_json::from_slice(&idx.bytes).unwrap();
    let m = client.resolve(&r.with_digest(index.manifests[0].digest.clone())).await.unwrap();
    let manifest: strata_oci::image::Manifest = serde_json::from_slice(&m.bytes).unwrap();
    let d = &manifest.config;
    client.fetch_blob(&r, d, &store).await.unwrap();
    assert_blob_ok(&store, &d.digest);
    client.fetch_blob(&r, d, &store).await.unwrap();

    let mut ghost = d.clone();
    ghost.digest = strata_oci::digest::Digest::of_bytes(b"no such blob");
    let err = client.fetch_blob(&r, &ghost, &store).await.unwrap_err();
    assert!(matches!(err, RegistryError::BlobUnknown { .. }), "{err}");
}

#[tokio::test]
async fn insecure_registry_skips_certificate_checks() {
    let Some(rig) = Rig::load("insecure_registry_skips_certificate_checks") else { return };
    let cfg = tempfile::tempdir().unwrap();
    credentials::login(Some(cfg.path()), rig.tls(), rig.user(), rig.pass()).unwrap();
    let opts = RegistryOptions { insecure_registries: vec![rig.tls().to_string()], ..isolated_options(cfg.path()) };
    let client = RegistryClient::new(opts).unwrap();
    let m = client.resolve(&busybox(rig.tls())).await.unwrap();
    assert!(m.is_index());
}

#[tokio::test]
async fn verify_login_checks_credentials() {
    use strata_oci::registry::Credential;
    let Some(rig) = Rig::load("verify_login_checks_credentials") else { return };
    let cfg = tempfile::tempdir().unwrap();
    let opts = RegistryOptions { ca_files: vec![rig.ca()], ..isolated_options(cfg.path()) };
    let client = RegistryClient::new(opts).unwrap();
    for registry in [rig.tls(), rig.token()] {
        client.verify_login(registry, &Credential::basic(rig.user(), rig.pass())).await.unwrap();
        let err = client.verify_login(registry, &Credential::basic(rig.user(), "wrong")).await.unwrap_err();
        assert!(matches!(err, RegistryError::AuthFailed { .. }), "{registry}: {err}");
        assert!(err.to_string().starts_with(&format!("login {registry}: authentication failed")), "{err}");
    }
    // Plain registry without auth: any credentials "work".
    client.verify_login(rig.plain(), &Credential::basic("x", "y")).await.unwrap();
}
