//! Fuzz lowering: any bytes that parse are lowered to a build graph (build args, stage
//! and platform resolution, mounts, COPY sources, expansion of every word) — a result
//! or an error, never a panic, a hang or unbounded memory. Every base image resolves
//! to an empty image, so any FROM goes through. Run it with a memory limit:
//! `cargo fuzz run -O lower -- -rss_limit_mb=2048`.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use strata_frontend::lower::{lower, ImageResolver, LowerOptions, ResolvedImage};
use strata_oci::image::{ImageConfig, Platform};
use strata_solver::graph::NetworkMode;

struct EveryImage;

impl ImageResolver for EveryImage {
    fn resolve(&mut self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        if reference.len() > 256 {
            return Err("reference too long".into());
        }
        let config = ImageConfig {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            ..Default::default()
        };
        Ok(ResolvedImage {
            reference: reference.to_string(),
            manifest_digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000".into(),
            config,
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = strata_frontend::parse(data) else { return };
    let Ok(df) = strata_frontend::instructions::parse_dockerfile(&parsed) else { return };
    let mut build_args = BTreeMap::new();
    build_args.insert("A".to_string(), "x".repeat(64));
    build_args.insert("BUILDKIT_INLINE_CACHE".to_string(), "1".to_string());
    for platform in ["linux/amd64", "linux/arm64"] {
        let opts = LowerOptions {
            build_args: build_args.clone(),
            target: None,
            target_platform: platform.parse().unwrap(),
            build_platform: "linux/amd64".parse().unwrap(),
            named_contexts: BTreeMap::new(),
            main_context: "context".into(),
            labels: BTreeMap::new(),
            network: NetworkMode::Host,
            allow_insecure: false,
            extra_hosts: Vec::new(),
            shm_size: None,
            ulimits: Vec::new(),
            created: Some("2024-01-01T00:00:00Z".into()),
            platform_label: None,
        };
        if let Ok(l) = lower(&df, &opts, &mut EveryImage) {
            let _ = l.graph.to_dot(&[l.target]);
        }
    }
});
